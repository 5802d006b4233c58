"""Tally how every command fares on every corpus model (issue #8).

Runs the same matrix as ``tests/test_corpus.py`` (``fixtures/corpus/corpus_matrix.py``: each
command in a child process on each model of ``fixtures/corpus/corpus.json``), prints per-command
counts of exit codes 0 / 1 / 2 / 3 and the one-line reason of every non-zero exit, and writes
``bench/results/corpus_tally.json`` with every case (exit code, seconds, stderr's last line).

Needs the corpus: ``make corpus``. Usage: ``.venv/bin/python bench/corpus_tally.py [--workers N]``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import write_results

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures" / "corpus"))
from corpus_matrix import COMMANDS, REPO, cases, run_case
from corpus_models import CorpusModel, load_corpus

CODES = (0, 1, 2, 3)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _reason(code: int, stdout: str, stderr: str) -> str:
    """Exit 1: the report's verdict line (which gate broke); 2 and 3: stderr's last line."""
    if code == 1:
        verdicts = [line for line in stdout.splitlines() if line.startswith("Result:")]
        return verdicts[-1] if verdicts else _last_line(stdout)
    return _last_line(stderr) if code else ""


def _run(model: CorpusModel, command: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        outcome = run_case(model, command, Path(folder))
    return {
        "model": model.name,
        "command": command,
        "exit": outcome.code,
        "seconds": round(outcome.seconds, 2),
        "stderr_lines": len(outcome.stderr.strip().splitlines()),
        "reason": _reason(outcome.code, outcome.stdout, outcome.stderr).replace(f"{REPO}/", ""),
    }


def tally(rows: list[dict]) -> dict[str, dict[int, int]]:
    """Per command, how many models ended with each exit code."""
    counts = {command: collections.Counter() for command in COMMANDS}
    for row in rows:
        counts[row["command"]][row["exit"]] += 1
    return {command: {code: c[code] for code in CODES} for command, c in counts.items()}


def _print(rows: list[dict], counts: dict[str, dict[int, int]]) -> None:
    print(f"{'command':26s}" + "".join(f"{f'exit {c}':>8s}" for c in CODES))
    for command, by_code in counts.items():
        print(f"{command:26s}" + "".join(f"{by_code[c]:8d}" for c in CODES))
    print("\nnon-zero exits:")
    for row in rows:
        if row["exit"]:
            print(f"  {row['command']:24s} {row['model']:28s} {row['exit']}  {row['reason']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="commands run at once")
    args = parser.parse_args()
    matrix = cases(load_corpus())
    missing = sorted({m.name for m, _ in matrix if not m.path.exists()})
    if missing:
        raise SystemExit(f"corpus models missing ({', '.join(missing)}): run `make corpus`")
    with ThreadPoolExecutor(args.workers) as pool:
        rows = list(pool.map(lambda case: _run(*case), matrix))
    counts = tally(rows)
    _print(rows, counts)
    path = write_results("corpus_tally", {"workers": args.workers, "tally": counts, "cases": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
