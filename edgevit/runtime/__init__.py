"""Running a model: `Classifier` over two backends that compute the same graph.

- `jit`: tinygrad's TinyJit-compiled graph on any tinygrad backend, with a direct CPU `replay`;
- `c`: the graph exported to C (edgevit.export), built into a shared library for this machine;
- `cache`: where compiled graphs and libraries are kept between processes, and what is trusted.
"""

from edgevit.runtime.classifier import RUNTIMES, Classifier, Prediction

__all__ = ["RUNTIMES", "Classifier", "Prediction"]
