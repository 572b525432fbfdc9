"""Meta-training shards its studies over several devices (two forced host CPU devices)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from metatune.meta.ppo import MetaTrainConfig, MetaTrainer
    from metatune.tasks import SyntheticConfig, SyntheticFamily, default_space
    fam = SyntheticFamily(default_space(), SyntheticConfig(seed=0, num_tasks=20))
    cfg = MetaTrainConfig(num_envs=8, num_trials=4, num_updates=2, num_minibatches=2,
                          update_epochs=1, reference_samples=256, reference_refine=2)
    tr = MetaTrainer(fam, cfg)
    traj = jax.jit(tr.rollout)(tr.init().params, jax.random.key(0))
    state, m = tr.step(tr.init())
    print(len(jax.devices()), tr.mesh is not None, len(traj.reward.sharding.device_set),
          float(m["final_regret"]))
""")


@pytest.mark.slow
def test_studies_shard_over_two_host_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  devices, sharded, used, regret = out.stdout.split()
  assert devices == "2" and sharded == "True" and used == "2"
  assert 0.0 <= float(regret) <= 1.0
