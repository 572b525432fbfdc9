"""Tree-structured search spaces with conditions and constraints, compiled to a fixed-shape encoding."""

from metatune.space.errors import SpaceError
from metatune.space.expr import ExprError, parse
from metatune.space.model import Bool, Categorical, Constraint, Float, Int, Ordinal, Param
from metatune.space.sampling import (feasibility, feature_size, featurize, neighbours, perturb,
                                     repair, sample)
from metatune.space.space import Space
