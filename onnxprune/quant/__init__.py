"""Quantization passes and plans: static int8 (``static``), int4 (``int4``), the rule table of
what stays in float (``rules``), per-layer sensitivity (``selection``) and accuracy control
(``accuracy``). The entry point is ``onnxprune.quantize.quantize_model_file``."""

from onnxprune.quant.options import MODES, QuantizeOptions

__all__ = ["MODES", "QuantizeOptions"]
