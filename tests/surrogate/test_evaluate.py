"""The held-out protocol: scores on known predictions, and the GP baseline at k = 0 and k > 0."""

import jax
import numpy as np
import pytest

from metatune.surrogate import evaluate as ev


def test_scores_on_known_predictions(table):
  rows = ev.draw_rows(jax.random.key(0), table, 2)
  max_k = 4
  obs = ev.observed(table, rows, max_k)[:, 0]
  q = obs.shape[-1]
  perfect = np.repeat(obs[:, None], 2, axis=1)
  pred = {"mean": perfect, "lo": perfect - 1.0, "hi": perfect + 1.0,
          "logp": np.full(perfect.shape, -0.5)}
  rows2 = np.repeat(rows[:, :1], 2, axis=1)
  s = ev.scores(pred, table, rows2, max_k)
  np.testing.assert_allclose(s["spearman"], 1.0)
  np.testing.assert_allclose(s["nll"], 0.5)
  np.testing.assert_allclose(s["coverage"], 1.0)
  flat = dict(pred, mean=np.zeros_like(perfect), lo=perfect + 0.5, hi=perfect + 1.0)
  s = ev.scores(flat, table, rows2, max_k)
  np.testing.assert_allclose(s["spearman"], 0.0)  # a constant prediction scores 0
  np.testing.assert_allclose(s["coverage"], 0.0)
  assert q == table.num_configs - max_k


@pytest.mark.slow
def test_evaluate_against_the_gp(surrogate, table):
  res = ev.evaluate(jax.random.key(1), surrogate, table, ks=(0, 6), num_reps=2, fit_steps=20)
  assert res["ks"] == [0, 6] and res["num_queries"] == table.num_configs - 6
  np.testing.assert_array_equal(res["gp"][0]["spearman"], 0.0)  # the GP prior is flat
  for model in ("meta", "gp"):
    for k in (0, 6):
      s = res[model][k]
      assert s["nll"].shape == (table.num_tasks,) and np.all(np.isfinite(s["nll"]))
      assert np.all((s["coverage"] >= 0) & (s["coverage"] <= 1))
  # With 6 observations of a smooth task the GP ranks far better than chance.
  assert np.mean(res["gp"][6]["spearman"]) > 0.3
  text = ev.table_markdown(res)
  assert text.splitlines()[0].startswith("| k | Spearman meta | Spearman GP")
  assert len(text.splitlines()) == 4
  with pytest.raises(ValueError, match="at least"):
    ev.evaluate(jax.random.key(1), surrogate, table, ks=(0, 30))
