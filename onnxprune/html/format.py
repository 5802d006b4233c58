"""One way to show a JSON value in the HTML report, and where it came from.

Every scalar the report shows goes through ``format_value`` and sits in an element whose
``data-path`` names its place in the JSON (``verification.quality.accuracy_before``,
``pruning.layers[2].sparsity_after``), so a test can check that every number shown equals the
JSON's value and that nothing in the JSON is left out.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

__all__ = ["SIGNIFICANT_DIGITS", "child_path", "format_value", "scalar_html"]

# Floats are shown with this many significant digits (the JSON keeps full precision).
SIGNIFICANT_DIGITS = 6
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_value(value: Any) -> str:
    """The text shown for a JSON scalar: ``-`` for null, ``yes``/``no`` for booleans, integers
    in full, floats with ``SIGNIFICANT_DIGITS`` significant digits, strings as they are."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{SIGNIFICANT_DIGITS}g}"
    return str(value)


def child_path(parent: str, key: str | int) -> str:
    """The ``data-path`` of ``parent``'s member ``key``: ``a.b`` for a plain key, ``a[3]`` for a
    list index, ``a["ai.onnx opset 13"]`` (a JSON string) for any other key."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if not _PLAIN_KEY.fullmatch(key):
        return f"{parent}[{json.dumps(key)}]"
    return f"{parent}.{key}" if parent else key


def scalar_html(path: str, value: Any, tag: str = "span") -> str:
    """``value`` formatted and escaped, in a ``tag`` element carrying its ``data-path``."""
    kind = "null" if value is None else type(value).__name__
    return (
        f'<{tag} class="v {kind}" data-path="{html.escape(path, quote=True)}">'
        f"{html.escape(format_value(value))}</{tag}>"
    )
