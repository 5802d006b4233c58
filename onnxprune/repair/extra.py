"""The ``repair`` extra: torch is imported here, lazily, and only by the repair engine.

The core install (prune, verify, quantize, ...) never imports torch. Commands that train call
``require_torch`` before any work, so a missing extra is one line and exit 2, with the command
that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from onnxprune.errors import InputError

__all__ = ["INSTALL_HINT", "require_torch"]

INSTALL_HINT = "pip install 'onnxprune[repair]'"


def require_torch() -> ModuleType:
    """Import and return torch, or raise ``InputError`` saying how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError as error:
        raise InputError(
            f"repair trains weights with torch, which is not installed (the 'repair' extra): "
            f"{INSTALL_HINT}"
        ) from error
