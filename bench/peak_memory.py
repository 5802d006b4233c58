"""Run ``python -m MODULE ARGS...`` in this process and write its peak RSS to ``$PEAK_FILE``.

The peak is VmHWM from /proc/self/status: the high-water mark of this process's own memory
since exec, unlike ``ru_maxrss``, which Linux carries over from the parent across fork/exec.
"""

from __future__ import annotations

import os
import runpy
import sys


def _peak_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main() -> None:
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        with open(os.environ["PEAK_FILE"], "w", encoding="ascii") as out:
            out.write(str(_peak_kib()))


if __name__ == "__main__":
    main()
