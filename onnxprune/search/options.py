"""Options of the budget-driven search (``compress --auto``)."""

from __future__ import annotations

from dataclasses import dataclass

from onnxprune.errors import InputError
from onnxprune.scoring import METHODS
from onnxprune.search.build import PRECISIONS, check_method, split_method

__all__ = ["DEFAULT_LEVELS", "NO_CONFIGURATION", "OBJECTIVES", "SCHEDULES", "AutoOptions"]

OBJECTIVES = ("size", "macs", "latency")
SCHEDULES = ("oneshot", "gradual")
# Sparsity levels each layer may take (the first is always 0: the layer left dense).
DEFAULT_LEVELS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
# Global levels of --schedule gradual, in order.
GRADUAL_STEPS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
NO_CONFIGURATION = "no configuration holds the budget"


@dataclass(frozen=True)
class AutoOptions:
    """What the search optimises and how long it may look.

    ``methods`` empty means every method the data allows (magnitude; with calibration data
    also wanda and sparsegpt). ``steps`` bisection steps and ``reverts`` greedy reverts per
    method; ``curve_samples`` calibration samples for the sensitivity curves; on the selection
    half the gates judge every accuracy drop as ``drop + z * paired SE * sqrt(1 + n_sel /
    n_conf)``, a bound on what the confirmation half will measure (``bound``), and
    ``margin`` tightens them by a fixed share (``candidates.tightened``); candidates within
    ``tolerance`` of the best objective compete on fairness (``choose.choose_fairest``);
    with the ``latency`` objective the ``timed`` passing candidates with the fewest MACs (and
    the precision alone) are then timed and the fastest chosen (0: the MAC proxy decides).
    """

    log: str
    objective: str = "size"
    methods: tuple[str, ...] = ()
    levels: tuple[float, ...] = DEFAULT_LEVELS
    max_evals: int | None = None
    max_time: float | None = None
    seed: int = 0
    steps: int = 6
    reverts: int = 4
    schedule: str = "oneshot"
    resume: bool = False
    curve_samples: int = 128
    margin: float = 0.0
    tolerance: float = 0.02
    z: float = 1.0
    precisions: tuple[str, ...] = ()
    timed: int = 3

    def validate(self, has_calibration: bool) -> None:
        """Raise ``InputError`` for options out of range or that need calibration data."""
        if self.objective not in OBJECTIVES:
            raise InputError(f"unknown objective '{self.objective}' ({', '.join(OBJECTIVES)})")
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule '{self.schedule}' ({', '.join(SCHEDULES)})")
        for method in self.methods:
            check_method(method)
            base = split_method(method)[0]
            needs = base in METHODS and METHODS[base].needs_calibration
            if needs and not has_calibration:
                raise InputError(f"--auto with method {method} needs --calibration DATA.npz")
        for precision in self.precisions:
            if precision not in PRECISIONS:
                raise InputError(f"unknown precision '{precision}' ({', '.join(PRECISIONS)})")
        if self.levels[0] != 0.0 or list(self.levels) != sorted(set(self.levels)):
            raise InputError("search levels must start at 0 and increase")
        if not all(0.0 <= level < 1.0 for level in self.levels):
            raise InputError("search levels must lie in [0, 1)")
        if self.max_evals is not None and self.max_evals < 1:
            raise InputError(f"--max-evals must be at least 1, got {self.max_evals}")
        if self.max_time is not None and self.max_time <= 0:
            raise InputError(f"--max-time must be positive, got {self.max_time}")
        if not 0.0 <= self.margin < 1.0:
            raise InputError(f"--search-margin must be in [0, 1), got {self.margin}")
        if not 0.0 <= self.tolerance < 1.0:
            raise InputError(f"--search-tolerance must be in [0, 1), got {self.tolerance}")
        if not 0.0 <= self.z <= 5.0:
            raise InputError(f"--search-z must be in [0, 5], got {self.z}")
        if not 0 <= self.timed <= 10:
            raise InputError(f"--search-timed must be in [0, 10], got {self.timed}")
        if self.steps < 0 or self.reverts < 0 or self.curve_samples < 1:
            raise InputError("bisection steps and reverts must be >= 0, curve samples >= 1")

    def searched_methods(self, has_calibration: bool) -> tuple[str, ...]:
        """Every method the search tries, each with every precision (``+int8``).

        Defaults: for ``latency``, structured FFN and attention-head pruning in int8 (cheapest
        first) and float (unstructured zeros do not make onnxruntime faster; a model without
        heads skips that method); otherwise magnitude, and wanda
        and sparsegpt with calibration data, in int8 and float for ``size`` (compressed bytes:
        int8 weights take a quarter; oneshot only: a gradual step prunes the last step's model)
        and in float for ``macs``.
        """
        latency = self.objective == "latency"
        methods = self.methods or (
            ("structured:ffn", "structured:heads")
            if latency
            else ("magnitude", "wanda", "sparsegpt")
            if has_calibration
            else ("magnitude",)
        )
        quantized = latency or (self.objective == "size" and self.schedule == "oneshot")
        precisions = self.precisions or (("int8", "float") if quantized else ("float",))
        pairs = [(m, p) for m in methods for p in precisions]
        if latency:  # every int8 method before any float one: int8 is what is fast
            pairs.sort(key=lambda pair: precisions.index(pair[1]))
        expanded = (m if p == "float" or "+" in m else f"{m}+{p}" for m, p in pairs)
        return tuple(dict.fromkeys(expanded))
