"""Structured pruning: remove whole channels, neurons and attention heads from ONNX graphs."""
