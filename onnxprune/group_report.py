"""Per-group tables of the terminal report (``verification.quality.groups``).

One table per attribute (and intersection): every group with its full name, groups under the
minimum size marked ``*`` (reported, left out of gaps, the worst group and the gates), then the
attribute's gaps before and after and the note naming the small groups.
"""

from __future__ import annotations

__all__ = ["batch_line", "gate_location", "group_lines"]

# (column title, width, field stem or None for a computed cell)
_RATES = (("sel b/a", "selection_rate"), ("tpr b/a", "tpr"), ("fpr b/a", "fpr"), ("ece b/a", "ece"))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _pt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} pt"


def _interval(group: dict) -> str:
    low_high = group.get("accuracy_drop_ci95")
    if not low_high:
        return "-"
    mark = "" if group.get("drop_ci_excludes_zero") else " ~0"
    return f"[{100 * low_high[0]:.1f}, {100 * low_high[1]:.1f}]{mark}"


def _columns(groups: list[dict]) -> list[tuple[str, str]]:
    first = groups[0]
    return [(title, stem) for title, stem in _RATES if f"{stem}_before" in first]


def _row(group: dict, width: int, rates: list[tuple[str, str]]) -> str:
    name = group["group"] + (" *" if group.get("small") else "")
    line = f"  {name:<{width}} {group['samples']:>6} {_pct(group['top1_agreement']):>6}"
    if "positives" in group:
        line += f" {group['positives']:>6}/{group['negatives']:<6}"
    if "accuracy_before" in group:
        line += (
            f" {_pct(group['accuracy_before']):>6} {_pct(group['accuracy_after']):>6}"
            f" {100 * group['accuracy_drop']:>7.2f} {_interval(group):>18}"
        )
    for _, stem in rates:
        pair = f"{_pct(group[f'{stem}_before'])}/{_pct(group[f'{stem}_after'])}"
        line += f" {pair:>11}"
    return line


def _header(groups: list[dict], width: int, rates: list[tuple[str, str]]) -> str:
    line = f"  {'group':<{width}} {'n':>6} {'agree%':>6}"
    if "positives" in groups[0]:
        line += f" {'pos/neg':<13}"
    if "accuracy_before" in groups[0]:
        line += f" {'acc% b':>6} {'acc% a':>6} {'drop pt':>7} {'drop 95% CI (pt)':>18}"
    for title, _ in rates:
        line += f" {title + ' %':>11}"
    return line


def _per_class_lines(group: dict) -> list[str]:
    cells = ", ".join(
        f"{row['class']}: {_pct(row['tpr_before'])}->{_pct(row['tpr_after'])}"
        for row in group.get("per_class", [])
    )
    return (
        [f"    {group['group']} recall % by class (n per class in JSON): {cells}"] if cells else []
    )


def _summary_lines(summary: dict) -> list[str]:
    lines = []
    if summary.get("accuracy_gap_before") is not None or "worst_group" in summary:
        worst = summary.get("worst_group")
        lines.append(
            f"  accuracy gap: {_pt(summary.get('accuracy_gap_before'))} -> "
            f"{_pt(summary.get('accuracy_gap_after'))}; worst drop: "
            + (f"{worst} ({_pt(summary['worst_group_drop'])})" if worst is not None else "-")
        )
    for name, title in (
        ("demographic_parity", "demographic-parity difference"),
        ("equalized_odds", "equalized-odds difference"),
    ):
        if f"{name}_difference_before" in summary:
            lines.append(
                f"  {title}: {_pt(summary[f'{name}_difference_before'])} -> "
                f"{_pt(summary[f'{name}_difference_after'])}"
            )
    if summary.get("lowest_agreement_group") is not None:
        lines.append(
            f"  lowest group agreement: {summary['lowest_agreement_group']} "
            f"({_pct(summary['lowest_group_agreement'])}%)"
        )
    if summary.get("note"):
        lines.append(f"  * {summary['note']}")
    if summary.get("rates_note"):
        lines.append(f"  * {summary['rates_note']}")
    return lines


def group_lines(attribute: str, summary: dict) -> list[str]:
    """The table for one attribute; drop intervals marked ``~0`` contain zero."""
    groups = summary["groups"]
    if not groups:
        return [f"Groups by {attribute}: none"]
    width = max(len("group"), *(len(g["group"]) + 2 for g in groups))
    rates = _columns(groups)
    legend = (
        " (drop 95% CI: paired bootstrap; ~0 = it contains 0)"
        if rates or any("accuracy_drop_ci95" in g for g in groups)
        else ""
    )
    lines = [f"Groups by {attribute}{legend}:", _header(groups, width, rates)]
    for group in groups:
        lines.append(_row(group, width, rates))
        lines += _per_class_lines(group)
    return lines + _summary_lines(summary)


def batch_line(verification: dict) -> list[str]:
    """The batch size every quality metric was computed at, and why."""
    record = verification.get("batch_size")
    if not record:
        return []
    return [
        f"  batch size        {record['quality']} for every quality metric ({record['reason']})"
    ]


def gate_location(gate: dict) -> str:
    """`` (race: Black)`` for a group gate that names where its value came from."""
    if "attribute" not in gate:
        return ""
    group = f": {gate['group']}" if gate.get("group") is not None else ""
    return f" ({gate['attribute']}{group})"
