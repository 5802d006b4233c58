"""matplotlib, imported only when a figure is drawn, and figures as self-contained SVG.

matplotlib is the optional extra ``html``; without it, drawing raises an ``InputError`` that
says how to install it. Figures are written as SVG with text kept as text, a fixed hash salt
and no date, so the same report gives the same bytes; they are embedded as base64 data URIs.
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from onnxprune.errors import InputError

__all__ = ["INSTALL_HINT", "Plot", "new_figure", "require_matplotlib", "style", "svg_data_uri"]

INSTALL_HINT = "pip install 'onnxprune[html]'"

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "onnxprune",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

# Colours of the baseline and the candidate in every figure.
BEFORE, AFTER = "#7f8c9a", "#d9822b"


@dataclass(frozen=True)
class Plot:
    """A drawn figure: its id, title, caption, the JSON paths it plots, and the image."""

    key: str
    title: str
    caption: str
    sources: tuple[str, ...]
    image: str


def require_matplotlib() -> Any:
    """The ``matplotlib`` module, or an ``InputError`` with the install command."""
    try:
        import matplotlib
    except ImportError as error:
        raise InputError(
            f"the HTML report needs matplotlib, which is not installed: {INSTALL_HINT}"
        ) from error
    return matplotlib


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib settings, for this block only (no global state is changed)."""
    with require_matplotlib().rc_context(_RC):
        yield


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` not registered with pyplot (nothing global, no GUI backend)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def svg_data_uri(figure: Any) -> str:
    """``figure`` as a base64 SVG data URI (call inside ``style()``)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
