"""Shared by the fault campaign (``test_faults*.py``): a workspace of inputs, and ``run_case``,
which runs the command line and checks the campaign's rules.

The rules, for every run: never exit 3 (an internal error); never change an input; on exit 2
write nothing at all and print one error line; on exit 0 or 1 write only the outputs asked for
(no ``<stem>-inferred.onnx`` or other strays beside the inputs). Each run records its kind,
command and exit code with ``record_property``, so ``pytest tests/test_faults*.py
--junitxml=faults.xml`` gives the campaign's tally.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import FIXTURES

from cli.main import main

__all__ = ["ADULT", "DYNAMO_DIR", "FAST", "build_workspace", "run_case", "snapshot"]

FAST = ["--latency-runs", "0"]
ADULT = FIXTURES / "adult_mlp.onnx"
DYNAMO_DIR = FIXTURES / "digits_cnn_dynamo"
INTERNAL_ERROR = 3


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its SHA-256."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() or path.is_symlink()
    }


def run_case(folder: Path, args: list, record: Callable[[str, object], None], kind: str) -> int:
    """Run the command line on files in ``folder``; check the campaign's rules; return the code."""
    before = snapshot(folder)
    result = CliRunner().invoke(main, [str(a) for a in args])
    after = snapshot(folder)
    record(f"{kind}:{args[0]}", result.exit_code)
    assert result.exit_code != INTERNAL_ERROR, f"{args}: {result.output}"
    assert result.exit_code in (0, 1, 2), f"{args}: {result.output} {result.exception!r}"
    changed = [name for name in before if after.get(name) != before[name]]
    if result.exit_code == 2:
        assert after == before, f"{args} exited 2 but changed files: {changed or set(after)}"
        errors = [n for n in result.stderr.splitlines() if n.startswith("onnxprune: error:")]
        assert len(errors) == 1, result.stderr
    else:
        allowed = _outputs_of(folder, args)
        assert not [n for n in changed if n not in allowed], f"{args} changed inputs {changed}"
        strays = [name for name in after if name not in before and name not in allowed]
        assert not strays, f"{args} wrote files it was not asked for: {strays}"
    return result.exit_code


def _outputs_of(folder: Path, args: list) -> set[str]:
    """The files (relative to ``folder``) a run may write: its outputs with their ``.data``,
    and compress's default outputs."""
    flags = ("-o", "--report", "--manifest")
    targets = [Path(str(args[args.index(flag) + 1])) for flag in flags if flag in args]
    if args[0] == "compress":
        model = Path(str(args[1]))
        out = targets[0] if "-o" in args else model.with_name(f"{model.stem}.compressed.onnx")
        targets += [out, out.with_name(f"{out.stem}.report.json")]
    names = set()
    for target in targets:
        for path in (target, target.with_name(target.name + ".data")):
            normal = Path(os.path.abspath(path))  # folds "..", keeps symlinks
            if normal.is_relative_to(folder):
                names.add(str(normal.relative_to(folder)))
    return names


def _subset(source: Path, target: Path, samples: int) -> None:
    arrays = dict(np.load(source))
    np.savez(target, **{name: array[:samples] for name, array in arrays.items()})


def build_workspace(base: Path) -> Path:
    """Fill ``base`` with the inputs: the adult model with small data files, a copy of it as a
    candidate, a structured manifest to replay, the dynamo model with its external data, the
    digits CNN (residual blocks, for drop-layers) and bystander ``<stem>-inferred.onnx`` files."""
    shutil.copy(ADULT, base / "m.onnx")
    shutil.copy(ADULT, base / "b.onnx")
    _subset(FIXTURES / "adult_mlp-eval.npz", base / "d.npz", 200)
    _subset(FIXTURES / "adult_mlp-calibration.npz", base / "c.npz", 64)
    (base / "dynamo").mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copy(DYNAMO_DIR / name, base / "dynamo" / name)
    _subset(DYNAMO_DIR / "eval.npz", base / "dynamo" / "d.npz", 64)
    shutil.copy(FIXTURES / "digits_cnn.onnx", base / "cnn.onnx")
    _subset(FIXTURES / "digits_cnn-calibration.npz", base / "cnn.npz", 32)
    args = ["prune", base / "m.onnx", "-o", base / "s.onnx", "--structured"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--manifest", base / "p.json"]])
    assert result.exit_code == 0, result.output
    (base / "s.onnx").unlink()
    for stem in ("m", "b", "cnn", "mutant", "dynamo/model"):  # onnxruntime's temporary names
        (base / f"{stem}-inferred.onnx").write_text("a user's file")
    return base
