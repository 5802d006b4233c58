"""Exceptions that the command line turns into one-line messages.

``InputError`` means the user gave something unusable (a bad model, data or option): exit code 2.
Anything else escaping the library is a bug and is reported as an internal error.
"""

from __future__ import annotations

import re

__all__ = ["InputError", "NothingToPrune", "OnnxpruneError", "compiled_regex", "first_line"]


class OnnxpruneError(Exception):
    """Base class of errors onnxprune raises on purpose."""


class InputError(OnnxpruneError):
    """A model, data file or option that onnxprune cannot use; the message says which and why."""


class NothingToPrune(InputError):
    """Pruning found nothing it may change. ``reasons`` (grouped, one line each) say why;
    ``pruning`` is the report section that lists every weight or group left alone."""

    def __init__(self, message: str, reasons: list[str], pruning: dict) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.pruning = pruning


def compiled_regex(option: str, pattern: str | None):
    """``re.compile(pattern)``, or an ``InputError`` naming the option; None stays None."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise InputError(f"{option} '{pattern}' is not a valid regex: {error}") from error


def first_line(error: BaseException, empty: str | None = None) -> str:
    """The first line of ``error``'s message, for one-line reports.

    An exception with an empty message gives ``empty``, or its type name when ``empty`` is None.
    """
    text = str(error).strip()
    if not text:
        return type(error).__name__ if empty is None else empty
    return text.splitlines()[0]
