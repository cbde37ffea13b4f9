"""JAX ops: jit, grad, sharding."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

xp = jnp
name = "jax"
erf = jax.scipy.special.erf


def asarray(x, dtype=None):
    return jnp.asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    return np.asarray(x)


def jit(fn, **kwargs):
    return jax.jit(fn, **kwargs)


def require_training(what: str = "training") -> None:
    """Training is supported on jax."""
