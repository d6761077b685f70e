"""What this machine is, detected rather than specified: CPU model, cores, clock, vector ISA, RAM and a
measured memory bandwidth. The `host` target is built from it.

Example:
    >>> from edgekd.hostinfo import detect_host
    >>> detect_host().cores >= 1
    True
"""

from __future__ import annotations

import functools
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

from edgekd.bench import cpu_info

# Single-precision FLOP per cycle per core for the widest FMA the ISA offers, two FMA pipes assumed
# (Intel Skylake-SP/Ice Lake with AVX-512, Haswell onwards with AVX2+FMA, Arm big cores with 2x128-bit NEON).
_FLOP_PER_CYCLE = (("avx512f", 64), ("fma", 32), ("avx", 16), ("sse2", 8), ("asimd", 16))


@dataclass(frozen=True)
class HostInfo:
    cpu: str
    cores: int
    clock_ghz: float
    isa: tuple[str, ...]  # the vector extensions that set FLOP/cycle, widest first
    flop_per_cycle: int
    ram_mb: float
    bandwidth_gbps: float

    @property
    def peak_gflops_fp32(self) -> float:
        return self.cores * self.clock_ghz * self.flop_per_cycle


def _clock_ghz(info: dict[str, str]) -> float:
    named = re.search(r"@\s*([\d.]+)\s*GHz", info.get("model name", ""))
    candidates = [float(named.group(1))] if named else []
    try:
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()
        candidates.append(int(khz) / 1e6)
    except (OSError, ValueError):
        pass
    if "cpu MHz" in info:
        candidates.append(float(info["cpu MHz"]) / 1e3)
    return max(candidates) if candidates else 2.0


def _ram_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def measure_copy_bandwidth_gbps(megabytes: int = 64, repeats: int = 5) -> float:
    """Best-of-N large-array copy (read + write bytes per second): a STREAM-copy-like figure."""
    import numpy as np

    src = np.ones(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - started)
    return 2 * src.nbytes / best / 1e9


@functools.cache
def detect_host() -> HostInfo:
    info = cpu_info()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    isa = tuple(name for name, _ in _FLOP_PER_CYCLE if name in flags)
    flop = next((f for name, f in _FLOP_PER_CYCLE if name in flags), 8)
    cpu = info.get("model name") or info.get("Model") or platform.processor() or platform.machine()
    return HostInfo(
        cpu=cpu,
        cores=os.cpu_count() or 1,
        clock_ghz=round(_clock_ghz(info), 3),
        isa=isa,
        flop_per_cycle=flop,
        ram_mb=round(_ram_mb(), 1),
        bandwidth_gbps=round(measure_copy_bandwidth_gbps(), 2),
    )
