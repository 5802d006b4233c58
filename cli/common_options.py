"""Options and helpers every command shares: option stacks, --debug, --json, --input-shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from onnxprune.errors import InputError
from onnxprune.normalize import parse_input_shape

__all__ = [
    "Decorator",
    "debug_option",
    "input_shape_option",
    "input_shapes_from",
    "json_option",
    "stack",
]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def stack(*decorators: Decorator) -> Decorator:
    """One decorator applying ``decorators`` in the order written (top one outermost)."""

    def apply(function: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


debug_option = click.option(
    "--debug", is_flag=True, help="Log progress and show tracebacks on errors."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")

input_shape_option = click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    help="NAME:d0,d1,... sets an input's dims for made-up inputs, shape inference and MACs "
    "(repeatable; NAME: alone for a 0-d input).",
)


def input_shapes_from(params: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for text in params.get("input_shapes") or ():
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise InputError(f"--input-shape {name} is given twice")
        shapes[name] = dims
    return shapes
