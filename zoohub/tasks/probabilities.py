"""Softmax and log-softmax on host numpy arrays, for turning a model's logits into results.

    >>> import numpy as np
    >>> softmax(np.array([0.0, 0.0])).tolist()
    [0.5, 0.5]
"""
from __future__ import annotations

import numpy as np


def log_softmax(x, dtype=np.float32) -> np.ndarray:
    """log p over the last axis, computed in `dtype` (shifted by the max, so no overflow)."""
    x = np.asarray(x).astype(dtype)
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def softmax(x, dtype=np.float32) -> np.ndarray:
    """p over the last axis, computed in `dtype`."""
    x = np.asarray(x).astype(dtype)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
