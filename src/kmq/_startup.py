"""Start-up and exit of the ``kmq`` command: what a short-lived process need not do.

The first call of any numba kernel loads numba's typing registries, and one of them
(``numba.np.arraymath``) looks for SciPy's BLAS, for ``np.dot`` and ``np.linalg`` inside kernels,
by importing ``scipy.linalg`` whole: about a quarter of a second, and a third of the command's
start-up, on a machine where SciPy is installed. kmq's kernels use neither, so the command lets
numba load that registry with ``scipy.linalg`` out of sight, and puts it back at once: later
imports of SciPy (``kmq analyze`` uses it through scikit-learn) work as usual. Only the command
does this; importing kmq as a library changes nothing in the caller's process.

At exit, the interpreter's last garbage collections walk every object numba and LLVM made
(about 0.3 s after a few kernels have loaded); the command freezes them first, so exit skips
that walk. Files, atexit handlers and child processes are closed as usual.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["load_numba_without_blas", "freeze_for_exit"]


def load_numba_without_blas() -> None:
    """Import numba's array-math registry without SciPy's BLAS (see the module's docstring).

    Does nothing when ``scipy.linalg`` or that registry is already loaded, or numba is missing.
    """
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # type: ignore[assignment]  # an import of it raises ImportError
    try:
        import numba.np.arraymath  # noqa: F401
    except ImportError:
        pass
    finally:
        if sys.modules.get("scipy.linalg", 0) is None:
            del sys.modules["scipy.linalg"]


def freeze_for_exit() -> None:
    """Move every object to the collector's permanent generation, so the exit's collections skip them.

    Call it when the command's work is done: nothing it made is collected afterwards.
    """
    gc.freeze()
