"""What a command cost: the process's peak memory and wall time, for the JSON report.

The peak is the high-water mark of this process's resident memory: ``VmHWM`` from
``/proc/self/status`` where there is one (Linux), else ``ru_maxrss`` (which Linux would carry
over from a parent across fork and exec, so it comes second). Wall time runs from the start
of the process (``/proc/self/stat``), or else from the import of this module.
"""

from __future__ import annotations

import os
import resource
import sys
import time

__all__ = ["process_resources"]

_IMPORTED = time.monotonic()


def _peak_kib() -> tuple[int, str]:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]), "VmHWM"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak // 1024 if sys.platform == "darwin" else peak), "ru_maxrss"


def _wall_seconds() -> float:
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            started = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime", encoding="ascii") as uptime:
            now = float(uptime.read().split()[0])
        return now - started / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def process_resources() -> dict:
    """``peak_rss_mb``, ``wall_seconds`` and how the peak was measured, for this process."""
    peak, source = _peak_kib()
    return {
        "peak_rss_mb": round(peak / 1024, 1),
        "wall_seconds": round(_wall_seconds(), 2),
        "peak_source": source,
    }
