"""NumPy ops: inference only. Never imports jax."""
from __future__ import annotations

import numpy as np

from zoohub.errors import BackendError

xp = np
name = "numpy"


# Numerical Recipes' Chebyshev fit of erfc: erfc(|x|) = t * exp(-x^2 + P(t)), t = 1 / (1 + |x|/2).
_ERFC = tuple(np.float32(c) for c in (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277))


def erf(x):
    """Error function in float32 (max abs error 4e-7), with in-place steps to keep GELU cheap.

    numpy has no erf; scipy's is no faster on this CPU and is not a dependency."""
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x)
    t = a * np.float32(0.5)
    t += 1
    np.reciprocal(t, out=t)
    p = t * _ERFC[9]
    for c in _ERFC[8:0:-1]:
        p += c
        p *= t
    p += _ERFC[0]
    a *= a
    p -= a
    np.exp(p, out=p)
    p *= t
    np.subtract(1, p, out=p)
    return np.copysign(p, x, out=p)


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
