"""Smaller weights: the arithmetic (`codec`) and what each scheme stores and computes (`schemes`).
Quantized weights files are edgevit.quantize."""
