"""Linear, embedding, norms, activations and MLPs.

Params are the checkpoint's own sub-dicts, e.g. {"weight": [out, in], "bias": [out]}.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from zoohub.backend import ops


def linear(params: Mapping, x, *, layout: str = "out_in"):
    """x @ W^T + b for torch Linear weights [out, in]; layout="in_out" for GPT-2's Conv1D [in, out].

    A LoRA adapter, when present beside the weight (`lora_A.weight` [r, in], `lora_B.weight`
    [out, r], PEFT's names, and a 0-d `lora_scaling` = alpha / r), adds `scaling * B(A(x))`.
    """
    xp = ops().xp
    w = params["weight"]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])  # one 2-D GEMM: numpy's stacked matmul is ~4x slower
    y = xp.matmul(x2, w.T if layout == "out_in" else w)
    if params.get("bias") is not None:
        y = y + params["bias"]
    if "lora_A" in params:
        low = xp.matmul(x2, params["lora_A"]["weight"].T)
        y = y + xp.matmul(low, params["lora_B"]["weight"].T) * params["lora_scaling"]
    return y.reshape(*lead, y.shape[-1])


def embedding(params: Mapping, ids):
    """Row lookup in a [V, D] table."""
    return ops().xp.take(params["weight"], ids, axis=0)


def layer_norm(params: Mapping, x, *, eps: float):
    """LayerNorm computed in float32, cast back to the input dtype."""
    xp = ops().xp
    x32 = x.astype(xp.float32, copy=False)  # copy=False: numpy's astype copies even to the same dtype
    centered = x32 - x32.mean(-1, keepdims=True)
    y = centered / xp.sqrt(xp.square(centered).mean(-1, keepdims=True) + eps)
    y = y * params["weight"].astype(xp.float32, copy=False)
    if params.get("bias") is not None:
        y = y + params["bias"].astype(xp.float32, copy=False)
    return y.astype(x.dtype, copy=False)


def rms_norm(params: Mapping, x, *, eps: float, offset: float = 0.0, scale_dtype_first: bool = False):
    """RMSNorm in float32. offset=1.0 gives Gemma's `(1 + weight)` scaling.

    Llama casts back to the input dtype *before* multiplying by the weight; Gemma multiplies in
    float32 first (`scale_dtype_first=True`). Identical in float32, different in bfloat16.
    """
    xp = ops().xp
    x32 = x.astype(xp.float32, copy=False)
    y = x32 * (1.0 / xp.sqrt(xp.square(x32).mean(-1, keepdims=True) + eps))
    w = params["weight"]
    if scale_dtype_first:
        return (y * (offset + w.astype(xp.float32, copy=False))).astype(x.dtype, copy=False)
    return (offset + w) * y.astype(x.dtype, copy=False) if offset else w * y.astype(x.dtype, copy=False)


def _gelu_erf(x):
    o = ops()
    return 0.5 * x * (1.0 + o.erf(x / math.sqrt(2.0)))


def _gelu_tanh(x):
    xp = ops().xp
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _relu(x):
    return ops().xp.maximum(x, 0)


def _silu(x):
    xp = ops().xp
    return x / (1.0 + xp.exp(-x))


def _tanh(x):
    return ops().xp.tanh(x)


# Named activations. HF config strings map here: "gelu" is the exact erf GELU, "gelu_new",
# "gelu_pytorch_tanh" and "gelu_fast"-style names are the tanh approximation.
ACTIVATIONS: dict[str, Callable] = {
    "gelu_erf": _gelu_erf,
    "gelu_tanh": _gelu_tanh,
    "relu": _relu,
    "silu": _silu,
    "tanh": _tanh,
}
_HF_ACTIVATION_NAMES = {
    "gelu": "gelu_erf",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",  # FastGELUActivation: the same tanh formula, factored
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
    "tanh": "tanh",
}


def activation(name: str) -> Callable:
    """The activation for an HF config name (`hidden_act`) or one of ours."""
    from zoohub.errors import UnsupportedConfigError

    key = _HF_ACTIVATION_NAMES.get(name, name)
    if key not in ACTIVATIONS:
        raise UnsupportedConfigError(
            f"activation {name!r} is not implemented; supported: {sorted(_HF_ACTIVATION_NAMES)}"
        )
    return ACTIVATIONS[key]


def dense_mlp(up: Mapping, down: Mapping, x, *, act: Callable, layout: str = "out_in"):
    """down(act(up(x))): the BERT/GPT-2/ViT feed-forward."""
    return linear(down, act(linear(up, x, layout=layout)), layout=layout)


def gated_mlp(gate: Mapping, up: Mapping, down: Mapping, x, *, act: Callable):
    """down(act(gate(x)) * up(x)): SwiGLU (silu) and GeGLU (gelu_tanh)."""
    return linear(down, act(linear(gate, x)) * linear(up, x))


def dropout(x, rate: float, key):
    """Inverted dropout; a no-op when `key` is None (inference) or rate is 0. Training is jax-only."""
    if key is None or not rate:
        return x
    import jax

    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return ops().xp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class KeyStream:
    """Deterministic per-call dropout keys: the i-th call folds i into the root key (None stays None).

    >>> KeyStream(None)() is None  # inference: no dropout keys
    True
    """

    def __init__(self, key):
        self.key = key
        self.count = 0

    def __call__(self):
        if self.key is None:
            return None
        import jax

        self.count += 1
        return jax.random.fold_in(self.key, self.count)


def get_path(tree: Mapping, path: str, default=None):
    """tree["a"]["b"] for path "a.b", or default when any part is missing."""
    node = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
