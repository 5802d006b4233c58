"""The HTML report: a self-contained page with figures and tables, rendered from the JSON report.

Needs the optional extra ``html`` (matplotlib): ``pip install 'onnxprune[html]'``;
``require_matplotlib`` raises an ``InputError`` with that command when it is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from onnxprune.errors import InputError
from onnxprune.html.draw import INSTALL_HINT, Plot, require_matplotlib
from onnxprune.html.format import format_value
from onnxprune.html.page import render_html
from onnxprune.paths import os_error_message
from onnxprune.report import SCHEMA_VERSION, write_text_atomic

__all__ = [
    "INSTALL_HINT",
    "Plot",
    "format_value",
    "load_report",
    "render_html",
    "require_matplotlib",
    "write_html",
]


def load_report(path: str | os.PathLike) -> dict:
    """A JSON report written by onnxprune (``--report``), checked to be one.

    Raises:
        InputError: the file cannot be read, is not JSON, or is not an onnxprune report of
            ``SCHEMA_VERSION``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(os_error_message(error, path)) from error
    except ValueError as error:
        raise InputError(f"{path}: not a JSON file ({error})") from error
    tool = data.get("tool") if isinstance(data, dict) else None
    if not isinstance(tool, dict) or tool.get("name") != "onnxprune":
        raise InputError(f"{path}: not an onnxprune report (no tool.name 'onnxprune')")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(
            f"{path}: report schema_version {data.get('schema_version')!r}; this onnxprune "
            f"reads {SCHEMA_VERSION}"
        )
    return data


def write_html(path: str | os.PathLike, report: dict) -> None:
    """Render ``report`` and write it to ``path`` atomically (temporary file, then rename).

    Raises:
        InputError: matplotlib is missing, or the file cannot be written.
    """
    write_text_atomic(path, render_html(report))
