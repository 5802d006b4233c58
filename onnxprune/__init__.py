"""onnxprune: prune, compress and verify ONNX models for deployment, proven with onnxruntime."""

from onnxprune.api import compress_file, default_outputs, prune, prune_file, verify_files
from onnxprune.errors import InputError, OnnxpruneError
from onnxprune.inspection import inspect_model
from onnxprune.pruning import PruneOptions, PruneResult
from onnxprune.verify import Gates, VerifyOptions

__all__ = [
    "Gates",
    "InputError",
    "OnnxpruneError",
    "PruneOptions",
    "PruneResult",
    "VerifyOptions",
    "compress_file",
    "default_outputs",
    "inspect_model",
    "prune",
    "prune_file",
    "verify_files",
]
