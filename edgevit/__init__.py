"""EdgeViT: a tiny Vision Transformer for handwritten digits, trained and run with tinygrad."""

__version__ = "0.1.0"
