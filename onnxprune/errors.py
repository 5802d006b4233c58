"""Exceptions that the command line turns into one-line messages.

``InputError`` means the user gave something unusable (a bad model, data or option): exit code 2.
Anything else escaping the library is a bug and is reported as an internal error.
"""

from __future__ import annotations

__all__ = ["InputError", "OnnxpruneError"]


class OnnxpruneError(Exception):
    """Base class of errors onnxprune raises on purpose."""


class InputError(OnnxpruneError):
    """A model, data file or option that onnxprune cannot use; the message says which and why."""
