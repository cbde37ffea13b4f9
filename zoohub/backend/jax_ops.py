"""JAX ops: jit, grad, sharding."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from zoohub.backend.distributed import gather

xp = jnp
name = "jax"
erf = jax.scipy.special.erf


def asarray(x, dtype=None):
    return jnp.asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    """A host copy; an array sharded over several processes is gathered (a collective: see `gather`)."""
    return gather(x)


def jit(fn, **kwargs):
    return jax.jit(fn, **kwargs)


def require_training(what: str = "training") -> None:
    """Training is supported on jax."""
