"""README's commands are the ones CI runs, and its numbers come from the commands it names."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
  test_cmd = next(b for b in blocks if "pytest" in b)
  assert test_cmd.strip() in ci.splitlines()
  assert "metatune demo" in blocks[0]


def test_every_space_in_configs_loads():
  from metatune.space import io
  paths = sorted((ROOT / "configs" / "spaces").glob("*.yaml"))
  assert paths
  for p in paths:
    space = io.load(p)
    assert space.num_params > 0
