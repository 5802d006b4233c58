"""Parity differences between groups, with rates that rest on too few samples left out.

The demographic-parity difference is the spread of the groups' selection rates; the
equalized-odds difference the larger of the spreads of their TPR and FPR (fairlearn's
``equalized_odds_difference``), per class one-vs-rest for multi-class outputs. A TPR measured
on one positive is 0 or 1, and decides the equalized-odds difference alone (Adult's
Asian-Pac-Islander & Female: 34 rows, 1 positive, 64.8 pt). So a group whose positives (for
the TPR) or negatives (for the FPR) are fewer than ``min_group_positives`` is shown with its
rate but left out of that spread, of the equalized-odds gate and named in a note.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MIN_POSITIVES", "parity", "rate_exclusions", "rates_note"]

# At 10 positives one flipped prediction moves the TPR by 10 pt; fewer is a coin toss.
DEFAULT_MIN_POSITIVES = 10

_RATES = (("tpr", "positives"), ("fpr", "negatives"))


def _spread(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if known else None


def _largest(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _tables(eligible: list[dict], binary: bool) -> list[list[dict]] | None:
    """One table of rate rows per class judged (binary: the groups' own entries)."""
    if binary:
        return [eligible]
    if eligible and "per_class" in eligible[0]:
        count = len(eligible[0]["per_class"])
        return [[g["per_class"][i] for g in eligible] for i in range(count)]
    return None


def _count(row: dict, count: str) -> int | None:
    """A row's positives or negatives (a per-class row calls its positives ``support``)."""
    if count == "positives" and "support" in row:
        return row["support"]
    return row.get(count)


def _counted(row: dict, count: str, minimum: int) -> bool:
    """Whether a rate of ``row`` rests on enough samples (rows without counts: yes)."""
    value = _count(row, count)
    return value is None or value >= minimum


def parity(
    eligible: list[dict], binary: bool, when: str, minimum: int
) -> tuple[float | None, float | None]:
    """Demographic-parity and equalized-odds differences between the eligible groups; a TPR
    (FPR) counts only where the row has at least ``minimum`` positives (negatives)."""
    tables = _tables(eligible, binary)
    if tables is None:
        return None, None
    dp, eo = [], []
    for table in tables:
        dp.append(_spread([r.get(f"selection_rate_{when}") for r in table]))
        tpr, fpr = (
            _spread([r.get(f"{rate}_{when}") for r in table if _counted(r, count, minimum)])
            for rate, count in _RATES
        )
        eo.append(_largest(tpr, fpr))
    return _largest(*dp), _largest(*eo)


def rate_exclusions(eligible: list[dict], binary: bool, minimum: int) -> list[str]:
    """Human-readable names of the rates left out: ``group: TPR (1 positive)``."""
    tables = _tables(eligible, binary) or []
    left_out = []
    for table in tables:
        for group, row in zip(eligible, table, strict=True):
            label = group["group"] if binary else f"{group['group']} class {row['class']}"
            for rate, count in _RATES:
                if not _counted(row, count, minimum):
                    left_out.append(f"{label}: {rate.upper()} ({_count(row, count)} {count})")
    return left_out


def rates_note(left_out: list[str], minimum: int) -> str:
    return (
        f"{len(left_out)} rate(s) rest on fewer than {minimum} positives (TPR) or negatives "
        f"(FPR): shown but left out of the equalized-odds difference and its gate: "
        + "; ".join(left_out)
    )
