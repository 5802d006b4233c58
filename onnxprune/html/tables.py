"""Any JSON value as HTML tables: every scalar shown, each with its ``data-path``.

Objects become key/value tables, lists of objects become tables with one row per item and one
column per key, lists of scalars are written inline (folded when long). Nothing is dropped, so
the page holds everything the JSON report holds.
"""

from __future__ import annotations

import html
from typing import Any

from onnxprune.html.format import child_path, scalar_html

__all__ = ["value_html"]

# Lists of scalars longer than this are folded into a <details> element.
FOLD_AFTER = 12


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _scalars_html(path: str, values: list) -> str:
    items = ", ".join(scalar_html(child_path(path, i), v) for i, v in enumerate(values))
    if len(values) <= FOLD_AFTER:
        return items
    return f"<details><summary>{len(values)} values</summary>{items}</details>"


def _columns(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def _rows_html(path: str, rows: list[dict]) -> str:
    columns = _columns(rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for index, row in enumerate(rows):
        row_path = child_path(path, index)
        cells = "".join(
            f"<td>{value_html(child_path(row_path, c), row[c]) if c in row else ''}</td>"
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="rows"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _object_html(path: str, value: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th>"
        f"<td>{value_html(child_path(path, key), item)}</td></tr>"
        for key, item in value.items()
    )
    return f'<table class="kv">{rows}</table>'


def value_html(path: str, value: Any) -> str:
    """``value`` (found at ``path`` in the report) as HTML; every scalar carries its path."""
    if _is_scalar(value):
        return scalar_html(path, value)
    if isinstance(value, dict):
        return _object_html(path, value) if value else '<span class="empty">(empty)</span>'
    if not value:
        return '<span class="empty">(none)</span>'
    if all(_is_scalar(item) for item in value):
        return _scalars_html(path, value)
    if all(isinstance(item, dict) for item in value):
        return _rows_html(path, value)
    items = "".join(f"<li>{value_html(child_path(path, i), v)}</li>" for i, v in enumerate(value))
    return f"<ol>{items}</ol>"
