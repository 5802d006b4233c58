"""Every path a command reads and writes, checked before any work, and outputs written together.

Guarantees:

* ``check_writes(reads, writes)`` refuses, before anything runs, a destination that is (after
  resolving symlinks, or as a hard link to the same inode) one of the files read, a
  destination given twice, a destination that is a folder, in a missing folder, or with a name
  the file system cannot hold. ``model_reads`` lists a model with its external data files;
  ``model_writes`` a model output with its ``<OUT>.data``.
* ``StagedOutputs`` gives every destination a path inside a private folder beside it
  (``.onnxprune-stage-*``, on the same file system) and ``commit`` renames the staged files into
  place together; ``discard`` removes them. A failure before the commit leaves nothing behind,
  and a failing commit puts back the files it already replaced.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import onnx

from onnxprune.errors import InputError

__all__ = [
    "STAGE_PREFIX",
    "StagedOutputs",
    "check_writes",
    "graph_tensors",
    "model_reads",
    "model_writes",
    "os_error_message",
    "same_file",
    "unstage_text",
    "unstaged",
]

logger = logging.getLogger(__name__)

STAGE_PREFIX = ".onnxprune-stage-"
# A staging folder at the start of a path (after a separator, a space, a quote or a bracket).
_STAGE_SEGMENT = re.compile(r"(?<![^\s'\"(/\\])" + re.escape(STAGE_PREFIX) + r"[A-Za-z0-9_]+[/\\]")


def unstage_text(text: str) -> str:
    """``text`` with staged paths (``DIR/.onnxprune-stage-XXXX/NAME``) turned into ``DIR/NAME``."""
    return _STAGE_SEGMENT.sub("", text)


def unstaged(value: Any) -> Any:
    """A copy of ``value`` (dicts, lists, strings) with every staged path unstaged."""
    if isinstance(value, str):
        return unstage_text(value)
    if isinstance(value, dict):
        return {key: unstaged(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [unstaged(item) for item in value]
    return value


def os_error_message(error: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for an ``OSError``: the file (unstaged) and the system's reason."""
    name = path if path is not None else (error.filename or "")
    reason = error.strerror or errno.errorcode.get(error.errno or 0, type(error).__name__)
    return unstage_text(f"{name}: {reason}" if name else reason)


def graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and attribute tensors of ``graph`` and of its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from graph_tensors(subgraph)


def model_reads(path: str | os.PathLike) -> list[Path]:
    """The model file and the external data files its tensors name (as far as it parses)."""
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # unreadable models are refused by load_model, with the reason
        return [path]
    locations = {
        entry.value
        for tensor in graph_tensors(proto.graph)
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location" and isinstance(entry.value, str)  # bytes: not UTF-8
    }
    return [path, *(path.parent / location for location in sorted(locations))]


def model_writes(path: str | os.PathLike) -> list[Path]:
    """A model destination and the external data file that may go with it."""
    path = Path(path)
    return [path, path.with_name(path.name + ".data")]


def _identity(path: Path) -> tuple[Path, tuple[int, int] | None]:
    resolved = path.resolve()
    try:
        info = resolved.stat()
    except OSError:
        return resolved, None
    return resolved, (info.st_dev, info.st_ino)


def _same(a: tuple[Path, tuple[int, int] | None], b: tuple[Path, tuple[int, int] | None]) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: equal once symlinks are resolved, or hard links."""
    return _same(_identity(Path(a)), _identity(Path(b)))


def _check_destination(path: Path) -> None:
    parent = path.parent
    try:
        if not parent.is_dir():
            raise InputError(f"{path}: output folder {parent} does not exist")
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf on Windows
        limit = 255
    if len(os.fsencode(path.name)) > limit:
        raise InputError(f"{path}: file name too long (at most {limit} bytes here)")
    try:
        if path.is_dir():
            raise InputError(f"{path}: is a folder, not a file name")
    except OSError as error:
        raise InputError(os_error_message(error, path)) from error


def check_writes(reads: Iterable[str | os.PathLike | None], writes: Iterable[Path]) -> None:
    """Refuse destinations that overwrite a file read, repeat, or cannot be written.

    Args:
        reads: every file the command reads (``None`` entries are skipped); expand models
            with ``model_reads``.
        writes: every file the command may write; expand models with ``model_writes``.
    """
    read_ids = [(Path(p), _identity(Path(p))) for p in reads if p is not None]
    seen: list[tuple[Path, tuple[Path, tuple[int, int] | None]]] = []
    for target in (Path(w) for w in writes):
        target_id = _identity(target)
        for source, source_id in read_ids:
            if _same(target_id, source_id):
                raise InputError(f"{target}: output would overwrite the input file {source}")
        for other, other_id in seen:
            if _same(target_id, other_id):
                also = "" if str(other) == str(target) else f" (also as {other})"
                raise InputError(f"{target}: the same file is given for two outputs{also}")
        seen.append((target, target_id))
        _check_destination(target)


class StagedOutputs:
    """Stage outputs in private folders beside their destinations; commit them together."""

    def __init__(self, writes: Iterable[Path]) -> None:
        self.writes = [Path(w) for w in writes]
        self._folders: dict[Path, Path] = {}
        for target in self.writes:
            parent = target.parent.resolve()
            if parent not in self._folders:
                try:
                    self._folders[parent] = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=parent))
                except OSError as error:
                    self.discard()
                    raise InputError(
                        f"{target}: cannot write in {target.parent} ({error.strerror})"
                    ) from error

    def __call__(self, target: str | os.PathLike | None) -> Path | None:
        """Where to write ``target`` until the commit (``None`` stays ``None``)."""
        if target is None:
            return None
        target = Path(target)
        return target.parent / self._folders[target.parent.resolve()].name / target.name

    def commit(self) -> list[Path]:
        """Rename every staged file into place; on failure put back what was replaced."""
        done: list[tuple[Path, Path | None]] = []
        try:
            for target in self.writes:
                staged = self(target)
                if not staged.exists():
                    continue
                backup = None
                if os.path.lexists(target):
                    backup = staged.parent / ".previous" / target.name
                    backup.parent.mkdir(exist_ok=True)
                    os.replace(target, backup)
                done.append((target, backup))
                os.replace(staged, target)
        except OSError as error:
            self._roll_back(done)
            raise InputError(os_error_message(error)) from error
        finally:
            self.discard()
        logger.info("wrote %s", ", ".join(str(target) for target, _ in done))
        return [target for target, _ in done]

    @staticmethod
    def _roll_back(done: list[tuple[Path, Path | None]]) -> None:
        for target, backup in reversed(done):
            try:
                if backup is None:
                    target.unlink(missing_ok=True)
                elif os.path.lexists(backup):
                    os.replace(backup, target)
            except OSError as error:  # keep putting back the others
                logger.error("could not put back %s: %s", target, os_error_message(error))

    def discard(self) -> None:
        """Remove the staging folders and anything left in them."""
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()
