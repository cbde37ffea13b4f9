"""NumPy ops: inference only. Never imports jax."""
from __future__ import annotations

import numpy as np

from zoohub.errors import BackendError

xp = np
name = "numpy"


def erf(x):
    """Error function to float32 accuracy (max abs error < 1.2e-7), computed in float64.

    numpy has no erf and scipy is not a dependency; this is the Chebyshev fit of erfc
    from Numerical Recipes (exp of a polynomial in t = 1/(1+|x|/2))."""
    x32 = np.asarray(x, dtype=np.float64)
    sign = np.sign(x32)
    a = np.abs(x32)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = -a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    return (sign * (1.0 - t * np.exp(poly))).astype(np.result_type(x, np.float32))


def asarray(x, dtype=None):
    return np.asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    return np.asarray(x)


def jit(fn, **_kwargs):
    """No compilation on numpy: the function runs eagerly."""
    return fn


def require_training(what: str = "training") -> None:
    raise BackendError(
        f"{what} needs the jax backend (numpy is inference only); "
        "pip install jax optax and set ZOOHUB_BACKEND=jax or zoohub.set_backend('jax')"
    )
