"""Load and save ONNX models safely.

Guarantees:

* ``load_model`` rejects files that are not ONNX, truncated models and missing or short external
  data files with an ``InputError`` naming the file, before any work is done.
* ``save_model`` writes the model (and its external data file, if any) into a temporary folder
  beside the destination, checks it with the full ONNX checker and by opening it in
  onnxruntime, and only then renames the files into place. A failure leaves nothing behind and
  never touches an existing input (compared after resolving symlinks and hard links); a file
  system that refuses the write (full, read-only, no permission) is an ``InputError`` naming
  the destination. The same model always serializes to the same bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import streaming
from onnxprune.errors import InputError, first_line
from onnxprune.paths import os_error_message, same_file
from onnxprune.proto_check import check_proto

__all__ = [
    "check_distinct_output",
    "external_data_files",
    "load_model",
    "model_files",
    "save_model",
    "uses_external_data",
]

logger = logging.getLogger(__name__)

# Protobuf cannot serialize a single message over 2 GiB; stay well under it.
EXTERNAL_DATA_THRESHOLD_BYTES = 1 << 30


def load_model(path: str | os.PathLike) -> ir.Model:
    """Load ``path`` into an onnx-ir model, validating the file and its external data.

    Raises:
        InputError: naming the file, for anything that makes it unusable: not a protobuf, a
            truncated or damaged model, tensors whose data does not fit their shape and type,
            missing or short external data, a model the ONNX checker rejects.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except OSError as error:
        raise InputError(os_error_message(error, path)) from error
    except Exception as error:  # protobuf and onnx raise several types for a damaged file
        raise InputError(f"{path}: not a valid ONNX model ({first_line(error)})") from error
    check_proto(proto, path)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as error:  # onnx-ir raises many types for inconsistent protos
        raise InputError(f"{path}: not a valid ONNX model ({first_line(error)})") from error
    ir.external_data.set_base_dir(model.graph, path.parent)
    _check_external_data(model, path)
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:  # ValidationError, or onnx's C++ errors on odd protos
        raise InputError(f"{path}: not a valid ONNX model ({first_line(error)})") from error
    return model


def _external_tensors(model: ir.Model) -> list[ir.ExternalTensor]:
    return [
        value.const_value
        for value in model.graph.initializers.values()
        if isinstance(value.const_value, ir.ExternalTensor)
    ]


def uses_external_data(model: ir.Model) -> bool:
    """Whether any initializer of the main graph lives in an external data file."""
    return bool(_external_tensors(model))


def external_data_files(model: ir.Model) -> list[Path]:
    """The external data files the model's initializers point to, sorted, without repeats."""
    return sorted({Path(tensor.path) for tensor in _external_tensors(model)})


def _check_external_data(model: ir.Model, path: Path) -> None:
    for tensor in _external_tensors(model):
        data_file = Path(tensor.path)
        if not data_file.is_file():
            raise InputError(
                f"{path}: external data file '{tensor.location}' of tensor '{tensor.name}' "
                f"is missing (looked in {data_file.parent})"
            )
        if tensor.length is not None and tensor.length != tensor.nbytes:
            raise InputError(
                f"{path}: external data of tensor '{tensor.name}' is {tensor.length} bytes "
                f"long, its shape and type need {tensor.nbytes}"
            )
        end = tensor.offset + tensor.nbytes
        if end > data_file.stat().st_size:
            raise InputError(
                f"{path}: external data file '{tensor.location}' is truncated "
                f"(tensor '{tensor.name}' needs bytes up to {end})"
            )


def model_files(path: str | os.PathLike, model: ir.Model | None = None) -> list[Path]:
    """The model file followed by the external data files it references.

    Pass ``model`` when it is already loaded from ``path`` to avoid loading it again.
    """
    path = Path(path)
    return [path, *external_data_files(model if model is not None else load_model(path))]


def _needs_external_data(model: ir.Model) -> bool:
    if uses_external_data(model):
        return True
    total = sum(
        value.const_value.nbytes
        for value in model.graph.initializers.values()
        if value.const_value is not None
    )
    return total >= EXTERNAL_DATA_THRESHOLD_BYTES


def _check_written_model(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise InputError(f"the result fails the ONNX checker: {first_line(error)}") from error
    options = ort.SessionOptions()  # only loaded, never run: one thread, weights not repacked
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise InputError(f"the result does not load in onnxruntime: {first_line(error)}") from error


def check_distinct_output(
    output: str | os.PathLike, protected: Sequence[Path], external_data: bool
) -> None:
    """Refuse an output path (or its data file) that would overwrite one of ``protected``.

    Paths are compared after resolving symlinks, and hard links to one file count as one.
    """
    output = Path(output)
    targets = [output] + ([output.with_name(output.name + ".data")] if external_data else [])
    for target in targets:
        if any(same_file(target, source) for source in protected):
            raise InputError(f"{target}: output would overwrite the input model's files")


def save_model(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    protected: Sequence[Path] = (),
    external_data: bool | None = None,
    move_scratch: bool = False,
) -> list[Path]:
    """Write ``model`` to ``path`` atomically; return the files written.

    Args:
        model: the model to write. External tensors it references are read, not moved.
        path: destination ``.onnx`` path; its external data goes to ``<path>.data``.
        protected: files that must never be overwritten (the input model's files).
        external_data: force external data on or off; by default it is used when the model
            already had external data or its initializers reach 1 GiB.
        move_scratch: let the output's data file be the model's scratch file, moved
            (``onnxprune.streaming.move_scratch``) instead of copied, when its layout allows;
            the model then reads its weights from the output. For a model not used after.
    """
    path = Path(path)
    if external_data is None:
        external_data = _needs_external_data(model)
    check_distinct_output(path, protected, external_data)
    if not path.parent.is_dir():
        raise InputError(f"{path}: output folder {path.parent} does not exist")
    try:
        return _write_checked(model, path, external_data, move_scratch)
    except OSError as error:  # no space, no permission, read-only, a name too long, ...
        raise InputError(os_error_message(error, path)) from error


def _write_checked(model: ir.Model, path: Path, external_data: bool, move: bool) -> list[Path]:
    data_name = path.name + ".data"
    workdir = Path(tempfile.mkdtemp(prefix=".onnxprune-save-", dir=path.parent))
    try:
        staged = workdir / path.name
        moved = external_data and move and streaming.move_scratch(model, workdir, data_name)
        if moved:
            ir.save(model, staged)  # the graph alone: its data file is in place
        elif external_data:
            ir.save(model, staged, external_data=data_name)
        else:
            ir.external_data.load_to_model(model)
            ir.save(model, staged)
        _check_written_model(staged)
        written = []
        if external_data:
            os.replace(workdir / data_name, path.with_name(data_name))
            written.append(path.with_name(data_name))
        os.replace(staged, path)
        if moved:
            ir.external_data.set_base_dir(model.graph, path.parent)
        written.insert(0, path)
        logger.info("wrote %s", ", ".join(str(p) for p in written))
        return written
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
