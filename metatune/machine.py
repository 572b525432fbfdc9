"""The CPU a result was computed on, as a short text (standard library only).

XLA compiles for the instruction sets of the CPU it runs on, so floating-point results can
differ in the last bits between CPUs with the same platform string; seeded training, surrogates
and PPO amplify such bits into other numbers. Tables and reproduction reports record this text
beside the platform, so that a comparison can tell whether it ran on the same kind of CPU.
"""

from __future__ import annotations

import pathlib
import platform

# Instruction-set extensions that change the code XLA generates (x86 flag names of
# /proc/cpuinfo); the ones present are listed after the model name.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu(cpuinfo: str | None = None) -> str:
  """The CPU's model name and its instruction-set extensions of `ISA_FLAGS`.

  Args:
    cpuinfo: the text of /proc/cpuinfo (read when None; absent off Linux).

  Example:
    >>> cpu("model name\\t: Xeon\\nflags\\t\\t: fpu avx2 avx512f\\n")
    'Xeon (avx2 avx512f)'
  """
  if cpuinfo is None:
    try:
      cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
      cpuinfo = ""
  fields: dict[str, str] = {}
  for line in cpuinfo.splitlines():
    key, sep, value = line.partition(":")
    if sep and key.strip() not in fields:
      fields[key.strip()] = value.strip()
  name = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
  flags = set((fields.get("flags") or fields.get("Features") or "").split())
  isa = [f for f in ISA_FLAGS if f in flags]
  return f"{name} ({' '.join(isa)})" if isa else name
