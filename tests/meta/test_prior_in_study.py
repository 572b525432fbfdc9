"""A prior folder drives a Study (``tuner="prior"``): valid proposals, its hash in provenance."""

from flax import nnx

from metatune.meta import compat
from metatune.meta.prior import save_prior
from metatune.networks import policy as pol
from metatune.study import Study
from metatune.tasks import default_space


def test_study_with_a_prior_tuner(tmp_path):
  config = pol.PolicyConfig()
  _, params = nnx.split(pol.Policy(config, rngs=nnx.Rngs(0)))
  space = default_space()
  card = save_prior(tmp_path / "prior", params, config, {
      "num_trials": 10, "space": space.name, "space_signature": space.signature,
      compat.DESCRIPTION: compat.describe_space(space)})  # its own space: no warning
  study = Study.create(space, storage=str(tmp_path / "s.db"), name="s", tuner="prior",
                       tuner_options={"path": str(tmp_path / "prior")})
  for _ in range(4):
    trial = study.ask()
    space.validate(trial.config)
    study.tell(trial, float(trial.config["lr"]))
  assert len(study.trials) == 4
  assert all(t.prior_hash == card["policy_hash"] for t in study.trials)
  # Every trial records the guard's weight and reason after its result (here the initial
  # design: the first 5 trials), and they survive reopening the study.
  study.close()
  again = Study.load(storage=str(tmp_path / "s.db"), name="s")
  for t in again.trials:
    assert t.attrs["tuner.guard_reason"] == "initial design"
    assert 0.0 <= t.attrs["tuner.guard_weight"] <= 1.0
  again.close()
