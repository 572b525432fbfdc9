"""The committed quick-profile tables (paper/quick/) match a regeneration in a fresh clone."""

import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys

import pytest

from metatune import machine
from metatune.reproduce import compare
from metatune.reproduce import registry as reg

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.reproduce
def test_a_fresh_clone_regenerates_the_committed_quick_tables(tmp_path):
  """Clones HEAD, runs ``metatune reproduce --profile quick`` there, compares with paper/quick.

  Takes about 30 minutes on 2 CPU cores with ``--jobs 2`` (every quick entry that needs no GPU, the data folder's
  included). Each table is compared as its registry entry says (``compare``: exact, within the
  committed CIs, or not at all); see metatune/reproduce/compare.py. Needs METATUNE_DATA_DIR and
  a committed paper/quick/; run it with ``pytest -m reproduce tests/test_reproduce_quick.py``.
  """
  data_dir = os.environ.get("METATUNE_DATA_DIR")
  if not data_dir or not os.path.isdir(data_dir):
    pytest.skip("METATUNE_DATA_DIR is not set to a folder: the quick profile needs the data")
  expected = ROOT / reg.PROFILES["quick"]["paper"]
  if not expected.is_dir():
    pytest.skip(f"no {expected.relative_to(ROOT)} in the repository: nothing committed to "
                "compare with")
  if not (ROOT / ".git").exists() or shutil.which("git") is None:
    pytest.skip("not a git checkout (or no git): cannot clone HEAD")
  clone = tmp_path / "clone"
  subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
  # The committed outputs come with the clone, stamps included: remove them so that every
  # entry runs instead of being up to date.
  shutil.rmtree(clone / reg.PROFILES["quick"]["paper"], ignore_errors=True)
  env = dict(os.environ, METATUNE_DATA_DIR=os.path.abspath(data_dir), PYTHONPATH=str(clone))
  jobs = str(max(1, min(2, os.cpu_count() or 1)))
  done = subprocess.run([sys.executable, "-m", "metatune", "reproduce", "--profile", "quick",
                         "--jobs", jobs],
                        cwd=clone, env=env, capture_output=True, text=True, check=False)
  assert done.returncode == 0, f"metatune reproduce failed:\n{done.stdout}\n{done.stderr}"
  outcome = compare.compare_outputs(reg.load_registry(ROOT / "configs" / "reproduce.yaml"),
                                    "quick", expected, clone / reg.PROFILES["quick"]["paper"])
  print("\n".join(outcome.differences + [outcome.summary()]))
  assert not outcome.differences, "\n".join(outcome.differences) + _machine_note(expected)
  assert outcome.exact + outcome.ci > 0, outcome.summary()


def _machine_note(expected: pathlib.Path) -> str:
  """Why tables may differ: the committed ones were written on another machine (or unknown)."""
  report = expected / "REPRODUCE.md"
  text = report.read_text() if report.is_file() else ""
  found = re.search(r"Written by .*? on \S+ \(([^,]+),", text)
  if found is None:
    return "\n(no machine recorded in the committed REPRODUCE.md)"
  cpu = re.search(r"\(\S+, CPU: (.*?), \d+ CPU cores", text)
  written = f"{found.group(1)}, CPU: {cpu.group(1) if cpu else 'not recorded'}"
  here = f"{platform.platform()}, CPU: {machine.cpu()}"
  if written == here:
    return f"\n(the committed tables were written on this kind of machine, {here})"
  return (f"\n(the committed tables were written on {written}; this machine is "
          f"{here}: XLA's floating-point results differ in the last bits between "
          "CPUs, seeded training and surrogates differ with them and PPO amplifies them into "
          "other priors; the comparison is exact only on the kind of CPU that wrote paper/quick)")
