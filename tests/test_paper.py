"""Every result quoted in paper/paper.md appears in a table that the paragraph cites.

A paragraph that quotes a result (a number with a decimal point, a percentage, or a ratio such
as ``0.15x``) must link at least one file under ``paper/`` (``[...](evaluate/x/table.md)``), and
each such number must occur in one of the files it links. Whole numbers (seeds, tasks, trials)
are not checked: they name settings, not results, and neither are numbers in `code spans`
(settings and commands).
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper" / "paper.md"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
NUMBER = re.compile(r"(?<![\w.])[-−]?\d+\.\d+(?:x|%)?|(?<![\w.])\d+(?:x|%)(?!\w)")


def _paragraphs(text: str):
  """(first line number, text) of each paragraph, code blocks and headings skipped."""
  out, buf, start, fence = [], [], 0, False
  for i, line in enumerate(text.splitlines() + [""], 1):
    if line.startswith("```"):
      fence = not fence
      continue
    if fence or line.startswith("#"):
      continue
    if line.strip():
      if not buf:
        start = i
      buf.append(line)
    elif buf:
      out.append((start, " ".join(buf)))
      buf = []
  return out


def _numbers(text: str) -> list[str]:
  text = LINK.sub("]", text)  # numbers inside link targets are not quotes
  text = re.sub(r"`[^`]*`", "", text)  # nor are settings and commands in code spans
  return [m.group(0).replace("−", "-") for m in NUMBER.finditer(text)]


def _variants(num: str) -> set[str]:
  """How a quoted number may be written in a table (sign and unit conventions)."""
  core = num.rstrip("x%")
  out = {num, core, core.lstrip("-")}
  if num.endswith("%"):
    out.add(num)
  return out


def check_paper(path: pathlib.Path) -> list[str]:
  """Problems of the paper at ``path`` (empty: every quoted result is in a cited table)."""
  problems = []
  for line, para in _paragraphs(path.read_text(encoding="utf-8")):
    nums = _numbers(para)
    if not nums:
      continue
    targets = [path.parent / t for t in LINK.findall(para) if not t.startswith("http")]
    tables = [t for t in targets if t.suffix in (".md", ".json", ".csv") and t.is_file()]
    missing_files = [str(t.relative_to(ROOT)) for t in targets if not t.exists()]
    if missing_files:
      problems.append(f"{path.name}:{line}: links missing files {missing_files}")
    if not tables:
      problems.append(f"{path.name}:{line}: quotes {nums[:3]} but cites no table")
      continue
    text = "\n".join(t.read_text(encoding="utf-8") for t in tables)
    for n in nums:
      if not any(re.search(r"(?<![\d.])" + re.escape(v) + r"(?!\d)", text)
                 for v in _variants(n)):
        problems.append(f"{path.name}:{line}: {n} is not in {[t.name for t in tables]}")
  return problems


def test_the_checker_catches_a_number_that_no_cited_table_holds(tmp_path):
  (tmp_path / "t.md").write_text("| a | 0.123 [0.1, 0.2] | 45% |\n")
  good = tmp_path / "good.md"
  good.write_text("# R\n\nThe prior reaches 0.123 ([table](t.md)), 45% of runs, "
                  "with `rescue_below=0.01`.\n")
  assert check_paper(good) == []
  bad = tmp_path / "bad.md"
  bad.write_text("The prior reaches 0.124 ([table](t.md)).\n\nUncited: 0.5 here.\n")
  problems = check_paper(bad)
  assert len(problems) == 2
  assert "0.124 is not in" in problems[0] and "cites no table" in problems[1]


@pytest.mark.skipif(not PAPER.exists(), reason="paper/paper.md is not written yet")
def test_every_number_in_the_paper_is_in_the_table_it_cites():
  assert check_paper(PAPER) == []
