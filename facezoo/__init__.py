"""FaCe Zoo: rank pre-trained models by how well they will transfer to a labelled target dataset.

The core library (this package) is pure computation: metrics, model and dataset adapters, feature extraction,
fine-tuning, evaluation. It imports none of Prefect, MLflow or DuckDB; those live in ``flows/``, ``tasks/`` and
``storage/``.
"""

import os

# NumPy and SciPy each load their own OpenBLAS, whose idle threads spin for ~0.1 s after every call: alternating
# the two (a Cholesky in SciPy after a Gram in NumPy) then costs ~50 ms per switch on 2 cores. A short spin fixes
# it; it only takes effect when set before NumPy is first imported, which the CLI and benchmarks guarantee.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from facezoo.errors import FaceZooError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["FaceZooError", "__version__"]
