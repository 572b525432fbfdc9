"""experiments/probe_hostile.py: a fast slice of the corpus, and the whole of it (slow)."""

import re

import pytest

import experiment_scripts


def _load_script():
  return experiment_scripts.load("probe_hostile")


def _row(text: str, label: str) -> list[int]:
  line = next(l for l in text.splitlines() if l.startswith(f"| {label} |"))
  return [int(x) for x in re.findall(r"\| (\d+)", line)]


def test_a_slice_of_bad_files_ends_in_clear_errors(tmp_path):
  """Files refused before any JSON/YAML node is built: fast through both entry points."""
  probe = _load_script()
  out = tmp_path / "probe.md"
  picks = ["NUL byte", "UTF-16 LE with BOM", "alias bomb (billion laughs)",
           "list nested 100k deep (JSON)", "empty file"]
  code = probe.main(sum((["--pick", p] for p in picks), ["--only", "space", "--out", str(out)]))
  text = out.read_text()
  assert code == 0, text
  assert "python experiments/probe_hostile.py --only space --pick" in text
  runs, clear, accepted, tracebacks, hangs, wrong = _row(text, "**all**")
  assert (runs, clear, accepted, tracebacks, hangs, wrong) == (10, 10, 0, 0, 0, 0), text


@pytest.mark.slow
def test_the_whole_corpus_has_no_traceback_or_hang(tmp_path):
  probe = _load_script()
  out = tmp_path / "probe.md"
  code = probe.main(["--out", str(out)])
  text = out.read_text()
  runs, _, _, tracebacks, hangs, _ = _row(text, "**all**")
  assert code == 0 and tracebacks == 0 and hangs == 0, text
  assert int(re.search(r"Probes: (\d+)", text).group(1)) >= 100 and runs >= 200
