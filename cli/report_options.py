"""Report options: ``--html`` and ``--explain`` (attribution drift)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.common_options import stack
from onnxprune.errors import InputError
from onnxprune.explain import ExplainOptions
from onnxprune.html import INSTALL_HINT, require_matplotlib

__all__ = ["explain_options", "explain_options_from", "html_from", "html_option"]

html_option = click.option(
    "--html",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Also write the report as one self-contained HTML page (needs matplotlib: "
    f"{INSTALL_HINT}).",
)


def html_from(params: dict[str, Any]) -> Path | None:
    """The ``--html`` path; refuses it up front when matplotlib is not installed."""
    path = params.get("html")
    if path is not None:
        require_matplotlib()
    return path


explain_options = stack(
    click.option(
        "--explain",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Explain N evaluation samples (seeded) on both models by occlusion and report how "
        "far the explanations drift.",
    ),
    click.option("--explain-top-k", type=click.IntRange(min=1), default=5, show_default=True),
    click.option("--explain-seed", type=int, default=0, show_default=True),
    click.option(
        "--explain-patch",
        type=click.IntRange(min=1),
        default=None,
        help="Image patch side in pixels (default: at most 8x8 patches).",
    ),
    click.option(
        "--min-explanation-agreement",
        type=float,
        default=None,
        help="Fail (exit 1) if the explanations' mean top-k overlap is below this.",
    ),
)


def explain_options_from(params: dict[str, Any]) -> ExplainOptions | None:
    if params["explain"] is None:
        if params["min_explanation_agreement"] is not None:
            raise InputError("--min-explanation-agreement needs --explain N")
        return None
    options = ExplainOptions(
        samples=params["explain"],
        top_k=params["explain_top_k"],
        seed=params["explain_seed"],
        patch=params["explain_patch"],
        min_agreement=params["min_explanation_agreement"],
    )
    options.validate()
    return options
