"""Read a pickled NumPy array without letting the pickle run code (for datasets shipped only as pickles)."""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from facezoo.errors import FaceZooError

__all__ = ["ArrayUnpickler", "load_array_pickle"]

# The installed NumPy's array reconstructor, taken from an array's own __reduce__: pickles name it
# numpy.core.multiarray (NumPy 1.x, a deprecated alias in 2.x) or numpy._core.multiarray, and neither is imported.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the three globals an ``ndarray`` pickle names (its reconstructor,
    ``numpy.ndarray`` and ``numpy.dtype``): any other global, such as ``os.system`` or ``builtins.eval``, fails
    before it can be called."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise FaceZooError(f"refusing to unpickle {module}.{name}: only NumPy arrays are allowed") from None


def load_array_pickle(path: str | Path) -> np.ndarray:
    """The NumPy array pickled (optionally gzip'd, detected by magic bytes) in ``path``."""
    try:
        data = Path(path).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise FaceZooError(f"{path}: cannot read the pickle ({e})") from None
    try:
        value = ArrayUnpickler(io.BytesIO(data)).load()
    except FaceZooError as e:
        raise FaceZooError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise FaceZooError(f"{path}: not a valid array pickle ({e})") from None
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
        raise FaceZooError(f"{path}: the pickle holds {type(value).__name__}, not a numeric NumPy array")
    return value
