"""Group refusal reasons for people: the same reason about different tensors is one line.

A reason names its tensors and nodes in single quotes (``channels of 'conv1' feed Concat``); the
template replaces each quoted name by ``'…'``. Each line keeps one full example, so no reason
is ever truncated away.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["grouped_reasons"]

_QUOTED = re.compile(r"'[^']*'")


def grouped_reasons(reasons: Iterable[str]) -> list[str]:
    """``"Nx template"`` lines (most frequent first), each followed by one full example when the
    template hid names."""
    reasons = list(reasons)
    counts = Counter(_QUOTED.sub("'…'", reason) for reason in reasons)
    example = {}
    for reason in reasons:
        example.setdefault(_QUOTED.sub("'…'", reason), reason)
    lines = []
    for template, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        full = example[template]
        lines.append(f"{count}x {template}" + (f" (e.g. {full})" if full != template else ""))
    return lines
