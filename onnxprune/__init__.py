"""onnxprune: prune, compress and verify ONNX models for deployment, proven with onnxruntime."""

from onnxprune.api import (
    decisions_from_manifest,
    default_outputs,
    manifest,
    prune,
    prune_file,
    verify_files,
)
from onnxprune.compress import cleanup_file, compress_file, quantize_file
from onnxprune.droplayers import DropOptions
from onnxprune.errors import InputError, NothingToPrune, OnnxpruneError
from onnxprune.inspection import inspect_model
from onnxprune.layers_api import drop_layers, grow
from onnxprune.pruning import PruneOptions, PruneResult
from onnxprune.quantize import QuantizeOptions
from onnxprune.structured.pipeline import StructuredOptions
from onnxprune.verify import Gates, VerifyOptions

__all__ = [
    "DropOptions",
    "Gates",
    "InputError",
    "NothingToPrune",
    "OnnxpruneError",
    "PruneOptions",
    "PruneResult",
    "QuantizeOptions",
    "StructuredOptions",
    "VerifyOptions",
    "cleanup_file",
    "compress_file",
    "decisions_from_manifest",
    "default_outputs",
    "drop_layers",
    "grow",
    "inspect_model",
    "manifest",
    "prune",
    "prune_file",
    "quantize_file",
    "verify_files",
]
