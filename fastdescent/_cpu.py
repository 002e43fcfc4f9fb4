"""CPU model and feature flags (for info() and benchmark reports), without extra dependencies."""

import os
import platform


def cpu_info():
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    wanted = ["sse2", "avx", "avx2", "fma", "avx512f", "neon", "asimd"]
    return {"model": model, "machine": platform.machine(), "logical_cores": os.cpu_count(),
            "features": [f for f in wanted if f in flags]}
