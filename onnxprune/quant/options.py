"""Quantization options: one frozen dataclass checked by ``validate()``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from onnxprune.errors import InputError
from onnxprune.quant.mixed import MUL_BUDGET
from onnxprune.quant.smooth import AUTO_ALPHAS

__all__ = [
    "CALIBRATE_METHOD_NAMES",
    "INT4_ALGORITHMS",
    "MODES",
    "MUL_BUDGET",
    "QuantizeOptions",
    "parse_mul_budget",
]

MODES = ("dynamic", "static", "int4")
CALIBRATE_METHOD_NAMES = ("minmax", "entropy", "percentile")
INT4_ALGORITHMS = ("rtn", "hqq", "gptq")


@dataclass(frozen=True)
class QuantizeOptions:
    """What to quantize and how.

    Attributes:
        mode: ``dynamic`` (int8, activations at run time), ``static`` (int8 QDQ calibrated on
            ``calibration``), ``int4`` (weight-only, with embedding tables).
        per_channel: int8 weight scale per output channel (else per tensor).
        exclude: regex of node names kept in float.
        block_size: int4 values per quantization block along the input axis.
        calibration: path of the calibration ``.npz``.
        calibrate_method: static: how activation ranges are chosen.
        smooth: static: SmoothQuant ``off``, ``auto`` (strength chosen per group of MatMuls by
            simulated int8 error) or a strength in (0, 1) used where it lowers that error.
        mul_budget: static: SmoothQuant ``Mul``s (scales that cannot be folded into constants)
            are dropped while the calibration output cosine stays within this of the model with
            all of them (``onnxprune.quant.mixed``); None keeps every ``Mul``.
        bias_correction: static: put the mean output shift of each int8 layer back in its bias.
        symmetric: int4: symmetric blocks (default asymmetric).
        embeddings: static and int4: also quantize embedding tables (``GatherBlockQuantized``,
            8 or 4 bits).
        int8_ratio: int4: fraction of MatMuls, the most sensitive, kept at 8 bits.
        algorithm: int4: ``rtn``, ``hqq`` or ``gptq`` (needs calibration).
        max_evaluations: accuracy control: at most this many re-quantize-and-verify rounds.
    """

    mode: str = "dynamic"
    per_channel: bool = True
    exclude: str | None = None
    block_size: int = 32
    calibration: str | None = None
    calibrate_method: str = "minmax"
    smooth: str = "0.95"
    mul_budget: float | None = MUL_BUDGET
    bias_correction: bool = True
    symmetric: bool = False
    embeddings: bool = True
    int8_ratio: float = 0.0
    algorithm: str = "rtn"
    max_evaluations: int = 8

    def smooth_alphas(self) -> tuple[float, ...]:
        """The SmoothQuant strengths to try (empty: off)."""
        if self.smooth in ("off", "auto"):
            return () if self.smooth == "off" else AUTO_ALPHAS
        try:
            alpha = float(self.smooth)
        except ValueError:
            alpha = -1.0
        if not 0.0 < alpha < 1.0:
            raise InputError(f"--smooth must be off, auto or a number in (0, 1), got {self.smooth}")
        return (alpha,)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown quantization mode '{self.mode}' ({', '.join(MODES)})")
        if self.mode == "static" and self.calibration is None:
            raise InputError("--mode static needs --calibration DATA.npz")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise InputError(f"--block-size must be a power of two >= 16, got {self.block_size}")
        if self.calibrate_method not in CALIBRATE_METHOD_NAMES:
            raise InputError(
                f"unknown calibration method '{self.calibrate_method}' "
                f"({', '.join(CALIBRATE_METHOD_NAMES)})"
            )
        self.smooth_alphas()
        if self.mul_budget is not None and not 0.0 <= self.mul_budget < 1.0:
            raise InputError(f"--mul-budget must be in [0, 1), got {self.mul_budget}")
        if not 0.0 <= self.int8_ratio <= 1.0:
            raise InputError(f"--int8-ratio must be in [0, 1], got {self.int8_ratio}")
        if self.algorithm not in INT4_ALGORITHMS:
            raise InputError(
                f"unknown int4 algorithm '{self.algorithm}' ({', '.join(INT4_ALGORITHMS)})"
            )
        if self.max_evaluations < 1:
            raise InputError(f"--max-evaluations must be >= 1, got {self.max_evaluations}")
        if self.algorithm == "gptq" and self.calibration is None:
            raise InputError("--algorithm gptq is data-aware: give --calibration DATA.npz")
        if self.exclude is not None:
            try:
                re.compile(self.exclude)
            except re.error as error:
                raise InputError(f"--exclude '{self.exclude}' is not a valid regex") from error


def parse_mul_budget(text: str) -> float | None:
    """``--mul-budget``: ``off`` (None: keep every smoothing Mul) or a number in [0, 1)."""
    if text == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise InputError(f"--mul-budget must be off or a number in [0, 1), got {text}")
    return value
