"""The ORT format: a model optimised and serialised by onnxruntime for its (reduced) builds.

``convert_to_ort`` does what ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` does with
``--optimization_style Fixed`` (all graph optimisations applied once, before saving; the
``session.qdqisint8allowed`` entry set for ARM), with one difference: onnxruntime's NCHWc layout
transform stays off unless asked for, also for amd64. NCHWc blocks tensors for the vector width
of the CPU that converts the model (8 floats with AVX2, 16 with AVX-512), so a model converted
with it is only right for that kind of CPU. ``write_operator_config`` writes the
``required_operators.config`` a reduced-operator onnxruntime build takes
(``--include_ops_by_config``), with onnxruntime's own tool.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from onnxprune.errors import InputError, first_line

__all__ = ["PLATFORMS", "OrtOptions", "convert_to_ort", "write_operator_config"]

logger = logging.getLogger(__name__)

PLATFORMS = ("amd64", "arm")


@dataclass(frozen=True)
class OrtOptions:
    """Target platform, and whether to keep the CPU-specific NCHWc layout (amd64 only)."""

    platform: str = "amd64"
    nchwc: bool = False

    def validate(self) -> None:
        if self.platform not in PLATFORMS:
            raise InputError(f"unknown platform '{self.platform}' (choose from amd64, arm)")
        if self.nchwc and self.platform != "amd64":
            raise InputError("--nchwc applies to amd64 only (NCHWc kernels are x86)")

    def describe(self) -> dict:
        """The conversion settings, for the report and the manifest."""
        return {
            "platform": self.platform,
            "optimization_style": "fixed",
            "optimization_level": "all",
            "nchwc_layout": self.nchwc,
            "qdq_int8_allowed": self.platform == "arm",
            "onnxruntime": ort.__version__,
        }


def convert_to_ort(
    model: str | os.PathLike, output: str | os.PathLike, options: OrtOptions
) -> None:
    """Optimise ``model`` with onnxruntime (Fixed style) and save it in ORT format to ``output``.

    Raises:
        InputError: onnxruntime cannot load or convert the model (the reason in one line).
    """
    options.validate()
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.optimized_model_filepath = str(output)
    session_options.log_severity_level = 4
    session_options.add_session_config_entry("session.save_model_format", "ORT")
    session_options.add_session_config_entry(
        "session.qdqisint8allowed", "1" if options.platform == "arm" else "0"
    )
    disabled = [] if options.nchwc else ["NchwcTransformer"]
    try:
        ort.InferenceSession(
            str(model),
            session_options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=disabled,
        )
    except Exception as error:  # onnxruntime raises its own exception types
        raise InputError(f"{model}: onnxruntime cannot convert it ({first_line(error)})") from error
    if not Path(output).is_file():
        raise InputError(f"{model}: onnxruntime wrote no ORT model")


def _config_tool():
    """onnxruntime's config writer, imported without the logging set-up its import does
    (``logging.basicConfig`` on the root logger, its own logger at DEBUG)."""
    root = logging.getLogger()
    before = list(root.handlers)
    from onnxruntime.tools.ort_format_model import create_config_from_models

    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    return create_config_from_models


def write_operator_config(ort_model: str | os.PathLike, output: str | os.PathLike) -> dict:
    """Write the operators ``ort_model`` needs to ``output``; return them per domain and opset.

    The header names the model by its file name only (onnxruntime's tool writes the full path).
    """
    create_config_from_models = _config_tool()
    ort_model, output = Path(ort_model), Path(output)
    with tempfile.TemporaryDirectory(prefix=".onnxprune-ops-", dir=output.parent) as work:
        raw = Path(work) / "ops.config"
        create_config_from_models([ort_model], raw, enable_type_reduction=False)
        lines = raw.read_text(encoding="utf-8").splitlines()
    lines = [f"# - {ort_model.name}" if line.startswith("# - ") else line for line in lines]
    output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    operators: dict[str, list[str]] = {}
    for line in lines:
        if line and not line.startswith("#"):
            domain, opset, ops = line.split(";", 2)
            operators[f"{domain or 'ai.onnx'} opset {opset}"] = ops.split(",")
    return operators
