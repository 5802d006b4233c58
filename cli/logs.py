"""The command line owns the logging configuration.

onnxprune's own messages go to stderr as ``onnxprune: warning: ...`` lines (``--debug`` adds its
INFO/DEBUG progress lines); other libraries (onnxruntime's quantization tools, onnxscript,
onnx-ir) are held at ERROR, so their advice ("Please consider to run pre-processing") and their
DEBUG floods never reach a user's terminal, with or without ``--debug``. onnxruntime's
quantization modules configure the root logger on import; that handler is replaced. The C++
side of onnxruntime logs only fatal errors (warnings with ``--debug``).
"""

from __future__ import annotations

import logging
import sys

import onnxruntime as ort

__all__ = ["configure_logging"]

_THIRD_PARTY = ("onnxruntime", "onnxscript", "onnx_ir", "onnx")


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if message.startswith(("warning: ", "error: ")):
            message = message.split(": ", 1)[1]
        level = record.levelname.lower() if record.levelno >= logging.WARNING else "debug"
        return f"onnxprune: {level}: {message}"


def configure_logging(debug: bool) -> None:
    """Route onnxprune's logs to stderr in one format; silence other libraries below ERROR."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.ERROR)
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.ERROR)
    own = logging.getLogger("onnxprune")
    for handler in list(own.handlers):
        own.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    own.addHandler(handler)
    own.setLevel(logging.DEBUG if debug else logging.WARNING)
    own.propagate = False
    # onnxruntime's C++ logger prints its own copy of failures onnxprune reports in one line.
    ort.set_default_logger_severity(2 if debug else 4)
