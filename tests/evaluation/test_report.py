"""The report's reading of a prior: its paired difference with every other tuner."""

import numpy as np

from metatune.evaluation import report


def _result(prior_shift):
  rng = np.random.default_rng(0)
  base = rng.uniform(0.1, 1.0, size=(6, 4, 10))           # [tasks, seeds, trials]
  base = np.minimum.accumulate(base, axis=-1)
  runs = {
      "gp_bo": {"regret": base, "kind": "gp_bo", "transfer": False},
      "prior": {"regret": base + prior_shift, "kind": "prior", "transfer": True},
  }
  for r in runs.values():
    r.update(failed=np.zeros(r["regret"].shape, bool), seconds=1.0)
  return {"experiment": "t", "family": "f", "tasks": list("abcdef"), "seeds": 4, "budget": 10,
          "pooled": False, "checkpoints": [1, 5, 10], "reference": "prior",
          "no_transfer": "gp_bo", "runs": runs, "command": "metatune evaluate x.yaml --out y",
          "machine": {"cpus": 2}}


def test_a_prior_is_read_against_every_other_tuner():
  better = _result(prior_shift=-0.05)
  summary = report.summarize(better)
  diffs = summary["rows"]["prior"]["paired_vs_each"]["gp_bo"]
  assert all(hi < 0 for _, _, hi in diffs.values())
  text = report.table_markdown(better, summary)
  assert "| gp_bo | **-0.050" in text               # better: bold
  worse = _result(prior_shift=+0.05)
  text = report.table_markdown(worse, report.summarize(worse))
  assert "| gp_bo | *0.050" in text                 # worse: italic
  assert "paired_vs_each" not in report.summarize(worse)["rows"]["gp_bo"]
  worse["reference"] = "gp_bo"                      # the reference is read the same way
  assert set(report.summarize(worse)["rows"]["gp_bo"]["paired_vs_each"]) == {"prior"}


def test_the_negative_transfer_table_shows_the_no_transfer_tuners_seed_noise():
  result = _result(prior_shift=0.0)
  summary = report.summarize(result)
  base = result["runs"]["gp_bo"]["regret"]
  # Seed s against seed s + 1 (cyclically) of the same task, by the table's rule.
  expected = np.mean(base[:, :, 4] > np.roll(base, 1, axis=1)[:, :, 4] + 1e-12)
  assert 0 < expected < 1
  assert summary["noise_floor"][5] == expected
  text = report.table_markdown(result, summary)
  assert f"| gp_bo (another seed) | {summary['noise_floor'][1]:.0%} |" in text
  # A prior equal to the no-transfer tuner is never worse; the floor is what seeds alone give.
  assert summary["rows"]["prior"]["worse_than_no_transfer"][5] == 0.0
  one_seed = _result(prior_shift=0.0)
  for r in one_seed["runs"].values():
    r["regret"] = r["regret"][:, :1]
  assert report.summarize(one_seed)["noise_floor"] is None
  assert "(another seed)" not in report.table_markdown(one_seed, report.summarize(one_seed))


def test_pairs_the_experiment_names_get_their_own_table():
  result = _result(prior_shift=0.0)
  result["runs"]["prior_b"] = {**result["runs"]["prior"],
                               "regret": result["runs"]["prior"]["regret"] - 0.05}
  result["pairs"] = [["prior_b", "prior"], ["prior", "missing"]]   # a pair without runs: left out
  summary = report.summarize(result)
  assert [(a, b) for a, b, _ in summary["pairs"]] == [("prior_b", "prior")]
  assert all(hi < 0 for _, _, hi in summary["pairs"][0][2].values())
  text = report.table_markdown(result, summary)
  assert "| prior_b - prior | **-0.050" in text
  del result["pairs"]
  assert "A - B" not in report.table_markdown(result, report.summarize(result))
