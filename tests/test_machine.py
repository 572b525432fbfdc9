"""The CPU text that tables and reproduction reports record beside the platform."""

from metatune import machine
from metatune.evaluation import report
from metatune.reproduce import runner, text

X86 = "processor\t: 0\nmodel name\t: Xeon Gold\nflags\t\t: fpu sse avx2 avx512f amx_tile\n\n" \
      "processor\t: 1\nmodel name\t: Xeon Gold\nflags\t\t: fpu sse avx2 avx512f amx_tile\n"


def test_the_cpu_text_names_the_model_and_the_instruction_sets_xla_uses():
  assert machine.cpu(X86) == "Xeon Gold (avx2 avx512f amx_tile)"
  assert machine.cpu("model name\t: Old\nflags\t\t: fpu sse\n") == "Old"
  assert machine.cpu("Features\t: fp asimd avx2\n").endswith("(avx2)")  # aarch64 reads Features
  assert machine.cpu("")  # nothing to read: platform.processor() or the machine, never empty


def test_reports_record_the_cpu():
  assert runner.machine()["cpu"] == machine.cpu()
  md = text.report([], "quick", None, False)
  assert f"CPU: {machine.cpu()}, " in md
  result = {"command": "metatune evaluate x.yaml --out y", "runs": {},
            "machine": {"platform": "Linux-x", "cpu": "Xeon (avx2)", "cpus": 2}}
  assert "(Linux-x, CPU: Xeon (avx2), 2 CPU cores" in report._provenance(result)
