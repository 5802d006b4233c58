"""The search's log: one JSON line per evaluated candidate, so a run can resume where it
stopped.

The first line is a header naming what the search is about (input model and data hashes,
options, seed); a log whose header differs is refused on resume rather than mixed in. Every
candidate's line is flushed to disk before the search goes on, so a killed run loses at most
the candidate it was evaluating (a torn last line is ignored). The best model so far is kept
beside the log (``<log>.best.onnx``), replaced atomically whenever a better one passes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from onnxprune.errors import InputError

__all__ = ["SearchLog", "best_path"]

logger = logging.getLogger(__name__)


def best_path(log: str | os.PathLike) -> Path:
    """Where the best model so far is kept: ``<log>.best.onnx``."""
    return Path(f"{log}.best.onnx")


class SearchLog:
    """Append-only JSONL log of candidates, keyed by their configuration."""

    def __init__(self, path: str | os.PathLike, header: dict, resume: bool) -> None:
        self.path = Path(path)
        self.header = json.loads(json.dumps(header, sort_keys=True))
        self.entries: dict[str, dict] = {}
        if resume and self.path.exists():
            self._read()
        else:
            self._write_line({"header": self.header}, mode="w")

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        records = []
        for number, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except ValueError:
                if number == len(lines) - 1:  # a run killed while writing its last line
                    break
                raise InputError(f"{self.path}: line {number + 1} is not JSON") from None
        if not records or records[0].get("header") != self.header:
            raise InputError(
                f"{self.path}: the log was written for another model, data or options; "
                "resume only the same search (or remove the log)"
            )
        for record in records[1:]:
            self.entries[record["key"]] = record
        logger.info("resuming: %d candidates from %s", len(self.entries), self.path)
        if len(lines) != len(records):  # drop the torn line before appending
            self.path.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")

    def _write_line(self, record: dict, mode: str = "a") -> None:
        with open(self.path, mode, encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def lookup(self, key: str) -> dict | None:
        """The logged record of the candidate ``key``, if it was evaluated before."""
        return self.entries.get(key)

    def record(self, key: str, record: dict) -> None:
        """Log a newly evaluated candidate."""
        entry = {"key": key, **record}
        self.entries[key] = entry
        self._write_line(entry)

    def save_best(self, model_file: str | os.PathLike) -> Path:
        """Copy a candidate model to ``best_path`` atomically; return that path."""
        target = best_path(self.path)
        temporary = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(model_file, temporary)
        os.replace(temporary, target)
        return target
