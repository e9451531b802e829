"""bf16 on CPU only where the CPU multiplies bf16 in hardware.

A CPU with AVX512_BF16 or AMX-BF16 (x86) or the BF16 extension (Arm) runs bf16 matmuls faster than fp32 (about 3x
on the AMD EPYC of docs/performance.md); one without them has oneDNN emulate bf16 by converting to fp32, which is
slower than plain fp32 and less precise. So a config that asks for ``bf16-mixed`` on a CPU gets it where the
instructions exist and ``32-true`` where they do not, and the run says which in its first lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# /proc/cpuinfo flags of native bf16 dot products: x86 "flags" lines, Arm "Features" lines
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # what the Trainer gets
    note: str  # one line for the run's log


def native_bf16_flags(cpuinfo: Optional[str] = None) -> list[str]:
    """The native-bf16 flags this CPU reports (``cpuinfo``: the text of /proc/cpuinfo; None reads it). Without a
    readable /proc/cpuinfo (macOS, Windows), torch's own CPU probe decides."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return _torch_probe()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return [flag for flag in NATIVE_BF16_FLAGS if flag in flags]


def _torch_probe() -> list[str]:
    import torch

    found = []
    if torch.cpu._is_avx512_bf16_supported():
        found.append("avx512_bf16")
    if torch.cpu._is_amx_tile_supported():
        found.append("amx_bf16")
    return found


def runs_on_cpu(accelerator: object) -> bool:
    """``trainer.accelerator`` names the CPU, or is ``auto`` (or unset) on a machine without a GPU."""
    name = str(accelerator or "auto").lower()
    if name == "cpu":
        return True
    if name != "auto":
        return False
    import torch

    return not torch.cuda.is_available() and not (torch.backends.mps.is_available())


def cpu_precision(requested: object, accelerator: object, flags: Optional[list[str]] = None) -> Optional[PrecisionChoice]:
    """The precision a CPU run of ``trainer.precision: bf16-mixed`` gets (``flags``: native-bf16 CPU flags; None
    reads them); None when the rule does not apply (another precision, or a GPU run)."""
    if str(requested) not in ("bf16-mixed", "bf16") or not runs_on_cpu(accelerator):
        return None
    flags = native_bf16_flags() if flags is None else flags
    if flags:
        return PrecisionChoice("bf16-mixed", f"precision: bf16-mixed (this CPU multiplies bf16 natively: "
                                             f"{', '.join(flags)})")
    return PrecisionChoice("32-true", "precision: 32-true (trainer.precision asks for bf16-mixed, but this CPU has no "
                                      "native bf16 matmul (no avx512_bf16 / amx_bf16 / bf16 flag): bf16 would be "
                                      "emulated, slower than fp32)")
