"""The fault campaign, part 3: every output path against every input path (see ``test_faults.py``).

Each command's ``-o``, ``--report`` and ``--manifest`` is pointed at each file it reads (the
model, its external data, ``--data``, ``--calibration``, ``--replay``, the candidate), as the
same path, a symlink, a hard link and ``dir/..``; two outputs at one file; a missing folder, a
folder, a name too long. Every such run must exit 2 having written nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fault_helpers import FAST, run_case

WRITES = ("o", "report", "manifest")
ADULT_READS = {
    "model": "m.onnx",
    "candidate": "b.onnx",
    "data": "d.npz",
    "calibration": "c.npz",
    "replay": "p.json",
    "cnn": "cnn.onnx",
    "cnn_calibration": "cnn.npz",
}
DYNAMO_READS = {
    "dmodel": "dynamo/model.onnx",
    "dext": "dynamo/model.onnx.data",
    "ddata": "dynamo/d.npz",
}
# Command templates: {read} and {write} slots; "dext" is read without being named.
TEMPLATES = {
    "prune": "prune {model} -o {o} --report {report} --method wanda --calibration {calibration}",
    "prune_manifest": "prune {model} -o {o} --report {report} --structured --manifest {manifest} "
    "--calibration {calibration}",
    "prune_replay": "prune {model} -o {o} --report {report} --structured --replay {replay}",
    "compress": "compress {model} -o {o} --report {report} --data {data} --calibration "
    "{calibration} --method wanda --latency-runs 0",
    "compress_manifest": "compress {model} -o {o} --structured --manifest {manifest} --data {data} "
    "--latency-runs 0",
    "verify": "verify {model} {candidate} --data {data} --report {report} --latency-runs 0",
    "quantize": "quantize {model} -o {o} --report {report} --data {data} --latency-runs 0",
    "quantize_static": "quantize {model} -o {o} --mode static --calibration {calibration} "
    "--report {report} --latency-runs 0",
    "grow": "grow {model} -o {o} --deeper /net/net.1/Relu --report {report} --data {data} "
    "--latency-runs 0",
    "drop_layers": "drop-layers {cnn} -o {o} --blocks 1 --calibration {cnn_calibration} "
    "--report {report} --latency-runs 0",
    "dynamo_prune": "prune {dmodel} -o {o} --report {report}",
    "dynamo_compress": "compress {dmodel} -o {o} --data {ddata} --report {report} --latency-runs 0",
    "dynamo_verify": "verify {dmodel} {dmodel} --data {ddata} --report {report} --latency-runs 0",
}
ALIASES = ("same", "symlink", "hardlink", "dotdot")


def _slots(template: str) -> tuple[list[str], list[str]]:
    names = [part[1:-1] for part in template.split() if part.startswith("{")]
    reads = [n for n in names if n not in WRITES] + (["dext"] if "dmodel" in names else [])
    return [n for n in names if n in WRITES], reads


def _alias(workspace: Path, target: Path, how: str) -> Path:
    if how == "same":
        return target
    if how == "dotdot":
        (workspace / "sub").mkdir(exist_ok=True)
        return workspace / "sub" / ".." / target.relative_to(workspace)
    alias = workspace / f"{how}-{target.name}"
    if how == "symlink":
        alias.symlink_to(target)
    else:
        os.link(target, alias)
    return alias


def _args(workspace: Path, template: str, **given: Path) -> list[str]:
    paths = {k: workspace / v for k, v in {**ADULT_READS, **DYNAMO_READS}.items()}
    fresh = {w: workspace / f"new-{w}.{'onnx' if w == 'o' else 'json'}" for w in WRITES}
    return template.format(**{**paths, **fresh, **given}).split()


PAIR_CASES = [
    (name, write, read, how)
    for name, template in TEMPLATES.items()
    for write in _slots(template)[0]
    for read in _slots(template)[1]
    for how in ALIASES
]
WRITE_PAIRS = [
    (name, first, second)
    for name, template in TEMPLATES.items()
    for i, first in enumerate(_slots(template)[0])
    for second in _slots(template)[0][i + 1 :]
]
OUTPUT_FAULTS = [
    (name, write, fault)
    for name, template in TEMPLATES.items()
    for write in _slots(template)[0]
    for fault in ("missing_folder", "folder", "name_too_long")
]


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_run_when_paths_are_distinct(workspace: Path, name: str, record_property):
    """The control: each template works, so its pairings below fail for the pairing alone."""
    code = run_case(workspace, _args(workspace, TEMPLATES[name]), record_property, "path")
    assert code in (0, 1)


@pytest.mark.parametrize(
    ("name", "write", "read", "how"), PAIR_CASES, ids=["-".join(case) for case in PAIR_CASES]
)
def test_output_never_overwrites_an_input(
    workspace: Path, name: str, write: str, read: str, how: str, record_property
) -> None:
    source = workspace / {**ADULT_READS, **DYNAMO_READS}[read]
    target = _alias(workspace, source, how)
    args = _args(workspace, TEMPLATES[name], **{write: target})
    assert run_case(workspace, args, record_property, "path") == 2


@pytest.mark.parametrize(("name", "first", "second"), WRITE_PAIRS)
def test_two_outputs_on_one_file_are_refused(
    workspace: Path, name: str, first: str, second: str, record_property
) -> None:
    shared = workspace / "shared.out"
    args = _args(workspace, TEMPLATES[name], **{first: shared, second: shared})
    assert run_case(workspace, args, record_property, "path") == 2


@pytest.mark.parametrize(("name", "write", "fault"), OUTPUT_FAULTS)
def test_unwritable_output_is_refused_before_any_work(
    workspace: Path, name: str, write: str, fault: str, record_property
) -> None:
    target = {
        "missing_folder": workspace / "absent" / "x.out",
        "folder": workspace / "dynamo",
        "name_too_long": workspace / ("n" * 300),
    }[fault]
    args = _args(workspace, TEMPLATES[name], **{write: target})
    assert run_case(workspace, args, record_property, "path") == 2


@pytest.mark.parametrize("read", ["data", "calibration"])
def test_output_data_file_never_overwrites_an_input(
    workspace: Path, read: str, record_property
) -> None:
    """``-o X`` may write ``X.data``: refused when that is the data or calibration file."""
    shutil.copy(workspace / ADULT_READS[read], workspace / "x.onnx.data")
    args = _args(workspace, TEMPLATES["compress"], **{read: workspace / "x.onnx.data"})
    args[args.index("-o") + 1] = str(workspace / "x.onnx")
    assert run_case(workspace, args, record_property, "path") == 2


@pytest.mark.parametrize("default", ["m.compressed.onnx", "m.compressed.report.json"])
def test_compress_default_outputs_never_overwrite_an_input(
    workspace: Path, default: str, record_property
) -> None:
    shutil.copy(workspace / "d.npz", workspace / default)
    args = ["compress", workspace / "m.onnx", "--data", workspace / default, *FAST]
    assert run_case(workspace, args, record_property, "path") == 2
