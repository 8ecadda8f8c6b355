"""Smaller weights: the arithmetic (`codec`), what each scheme stores and computes (`schemes`), and
quantized weights files (`files`)."""
