"""Real training of small networks on real data, a batch of configurations in one vmap."""

from metatune.tasks.training.data import DATASETS, FOLDER, SKLEARN, Data, DatasetInfo, load
from metatune.tasks.training.family import (DATASET_SPLIT, HELDOUT_MODELS, TrainingConfig,
                                            TrainingFamily, make_family)
from metatune.tasks.training.hparams import HParams, decode, default_space
from metatune.tasks.training.models import MODELS, Arch, ModelSpec
from metatune.tasks.training.train import TrainSetup, make_batch_train, make_train

__all__ = ["DATASETS", "FOLDER", "SKLEARN", "Data", "DatasetInfo", "load", "DATASET_SPLIT",
           "HELDOUT_MODELS", "TrainingConfig", "TrainingFamily", "make_family", "HParams",
           "decode", "default_space", "MODELS", "Arch", "ModelSpec", "TrainSetup",
           "make_batch_train", "make_train"]
