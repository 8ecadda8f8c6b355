"""Running a model: `Classifier`, a thin front over backends that compute the same graph.

- `tinygrad`: tinygrad's TinyJit-compiled graph (`jit`) on any tinygrad backend, replayed directly on
  the CPU (edgevit.replay);
- `c`: the graph exported to C (edgevit.export), built into a shared library for this machine.
Each backend has the interface of `backend.Backend`; compiled graphs and libraries are kept in
edgevit.cache between processes.
"""

from edgevit.runtime.backend import Prediction
from edgevit.runtime.classifier import RUNTIMES, Classifier

__all__ = ["RUNTIMES", "Classifier", "Prediction"]
