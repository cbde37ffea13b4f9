"""Mixture of experts: a router that picks `top_k` of `num_experts` expert MLPs per token, and the
expert computation with work proportional to the experts each token uses (never every expert on
every token behind a mask).

A family writes three lines (Qwen3-MoE's sparse block, x: [B, T, D]):

    logits = linear(p["gate"], x)                                  # [B, T, E] router logits
    weights, indices = route(ROUTER, logits)                       # [N, k] float32, [N, k] int32
    y = experts_forward(x, weights, indices, p["experts"], mlp=swiglu_experts(act))   # [B, T, D]

API (stable: other families build on it):

- `Router(num_experts, top_k, scoring="softmax"|"sigmoid", order="score_then_topk"|"topk_then_softmax",
  norm_topk_prob, norm_epsilon, routed_scaling_factor, num_groups, topk_groups, group_score)`:
  the routing rule as data. `route(router, logits, selection_bias=None)` applies it to router logits
  [..., E] (computed in float32) and returns (weights [N, k] float32, indices [N, k] int32) over the
  N = prod(leading dims) tokens, in transformers' order of the top-k slots.
  - "score_then_topk" (Mixtral, Qwen-MoE, OLMoE, DeepSeek): scores = softmax (or sigmoid) of the
    logits, top-k of the scores; `norm_topk_prob` divides the k weights by their sum
    (+ `norm_epsilon`, DeepSeek-V3's 1e-20); weights are then multiplied by `routed_scaling_factor`.
  - "topk_then_softmax" (gpt-oss): top-k of the logits, softmax over those k (a router bias is part
    of the logits: the family's `linear` adds it).
  - `selection_bias` [E] (DeepSeek-V3's `e_score_correction_bias`) is added to the scores to choose
    experts only; the weights are the unbiased scores.
  - Group-limited selection (DeepSeek-V3: `num_groups` = n_group, `topk_groups` = topk_group): experts
    are split into `num_groups` equal groups, each scored by `group_score` ("top2_sum": the sum of its
    two best biased scores, V3; "max": its best, V2), and experts outside the `topk_groups` best groups
    are excluded before the top-k.
- `experts_forward(x, weights, indices, experts, *, mlp, shared=None, strategy=None)`: the weighted sum
  of each token's chosen experts, `sum_j weights[n, j] * mlp(expert indices[n, j], x[n])`, plus
  `shared(x)` when given (a shared expert: Qwen2-MoE's gated one, DeepSeek's `shared_experts`).
  `experts` is the param dict of the expert list with every tensor stacked on a leading expert axis
  (`{"gate_proj": {"weight": [E, F, D]}, ...}`, torch Linear [out, in] per expert, biases [E, out]).
- `mlp(params, h, matmul)` is one expert's function written with `matmul(w, h, bias=None,
  layout="out_in")` for its linears; `params` has the `experts` tree's structure and `matmul` knows
  how to apply a stacked weight to the rows at hand. `swiglu_experts(act, gate=, up=, down=)` is the
  SwiGLU expert (`down(act(gate(h)) * up(h))`) under any tensor names (Mixtral's w1/w3/w2); a family
  with another expert (gpt-oss' clamped SwiGLU on a fused, interleaved `gate_up_proj` [E, D, 2F] with
  biases) writes its own `mlp` with `matmul(..., layout="in_out")`.
- `load_balancing_loss(router_logits, top_k, mask=None)`: the Switch-Transformer auxiliary loss
  exactly as transformers' `load_balancing_loss_func` (router_logits [L, N, E] over all layers).

How the experts run (`strategy`, chosen from the backend and the number of token-expert pairs M = N * k
unless given):
- "gather" (jax, M <= E: decoding a few rows): gathers only the chosen experts' weights per pair.
- "grouped" (jax, otherwise: prefill and training): pairs sorted by expert; on GPU/TPU
  `jax.lax.ragged_dot` over the sorted rows. On CPU, jax 0.10's `ragged_dot` lowers to every group
  on every row behind a mask, so instead the sorted rows are padded per expert to blocks of `b` rows
  and a `lax.scan` runs each block against its one expert's weights: (M + E * b) rows of work,
  differentiable (training uses it).
- "loop" (numpy, and jax when asked): per active expert, a gather of the rows that chose it.

    >>> import numpy as np
    >>> router = Router(num_experts=4, top_k=2, norm_topk_prob=True)
    >>> logits = np.array([[2.0, 0.0, 1.0, -1.0]], np.float32)
    >>> weights, indices = route(router, logits)
    >>> indices.tolist(), weights.sum(-1).round(6).tolist()
    ([[0, 2]], [1.0])
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from zoohub.backend import ops

STRATEGIES = ("gather", "grouped", "loop")


@dataclass(frozen=True, kw_only=True)
class Router:
    """The routing rule of a family (see the module docstring for each field's meaning)."""

    num_experts: int                 # E
    top_k: int                       # k experts per token
    scoring: str = "softmax"         # "softmax" | "sigmoid": scores from the logits
    order: str = "score_then_topk"   # or "topk_then_softmax" (top-k of the logits, softmax over those)
    norm_topk_prob: bool = False     # divide the k weights by their sum
    norm_epsilon: float = 0.0        # added to that sum (DeepSeek-V3: 1e-20)
    routed_scaling_factor: float = 1.0
    num_groups: int = 1              # group-limited selection: number of expert groups (n_group)
    topk_groups: int = 1             # groups kept per token (topk_group)
    group_score: str = "top2_sum"    # how a group is scored: "top2_sum" (DeepSeek-V3) or "max" (V2)

    def __post_init__(self):
        if not 0 < self.top_k <= self.num_experts:
            raise ValueError(f"top_k={self.top_k} experts per token out of {self.num_experts}")
        if self.scoring not in ("softmax", "sigmoid") or self.order not in ("score_then_topk", "topk_then_softmax"):
            raise ValueError(f"routing {self.scoring!r} / {self.order!r} is not implemented")
        if self.num_experts % self.num_groups or not 0 < self.topk_groups <= self.num_groups:
            raise ValueError(f"{self.num_experts} experts in {self.num_groups} groups, keeping {self.topk_groups}")
        if self.group_score not in ("top2_sum", "max"):
            raise ValueError(f"group_score={self.group_score!r} is not 'top2_sum' or 'max'")


# ---- routing -------------------------------------------------------------------------------------

def _softmax(x):
    xp = ops().xp
    e = xp.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _top_k(x, k: int):
    """(values, indices) of the k largest along the last axis, largest first (ties: lower index first)."""
    if ops().name == "jax":
        from jax import lax

        return lax.top_k(x, k)
    idx = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(x, idx, -1), idx


def _group_mask(router: Router, choice):
    """[N, E] True for experts inside each token's `topk_groups` best groups."""
    xp = ops().xp
    n, e = choice.shape
    grouped = choice.reshape(n, router.num_groups, e // router.num_groups)
    if router.group_score == "top2_sum":
        group = _top_k(grouped, min(2, grouped.shape[-1]))[0].sum(-1)
    else:
        group = grouped.max(-1)
    _, best = _top_k(group, router.topk_groups)
    keep = (xp.arange(router.num_groups)[None, :, None] == best[:, None, :]).any(-1)  # [N, G]
    return xp.repeat(keep, e // router.num_groups, axis=1)


def route(router: Router, logits, *, selection_bias=None):
    """(weights [N, k] float32, indices [N, k] int32) for router logits [..., E]; see `Router`."""
    xp = ops().xp
    logits = logits.reshape(-1, logits.shape[-1]).astype(xp.float32)
    if router.order == "topk_then_softmax":
        top, indices = _top_k(logits, router.top_k)
        return _softmax(top), indices.astype(xp.int32)
    scores = _softmax(logits) if router.scoring == "softmax" else 1.0 / (1.0 + xp.exp(-logits))
    choice = scores if selection_bias is None else scores + selection_bias.astype(xp.float32)
    if router.num_groups > 1 and router.topk_groups < router.num_groups:
        choice = xp.where(_group_mask(router, choice), choice, -xp.inf)
    _, indices = _top_k(choice, router.top_k)
    weights = xp.take_along_axis(scores, indices, axis=-1)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdims=True) + router.norm_epsilon)
    if router.routed_scaling_factor != 1.0:
        weights = weights * router.routed_scaling_factor
    return weights, indices.astype(xp.int32)


def load_balancing_loss(router_logits, top_k: int, mask=None):
    """transformers' `load_balancing_loss_func`: E * sum_e f_e * P_e over all layers' tokens, where
    f_e counts the top-k assignments to expert e per token and P_e is its mean softmax probability.

    router_logits: [L, N, E] (or [N, E]); mask: [N] (1 = real token; padding left out) or None."""
    xp = ops().xp
    logits = router_logits.astype(xp.float32)
    if logits.ndim == 2:
        logits = logits[None]
    num_experts = logits.shape[-1]
    probs = _softmax(logits)                                                   # [L, N, E]
    _, chosen = _top_k(probs, top_k)                                           # [L, N, k]
    counts = (chosen[..., None] == xp.arange(num_experts)).astype(xp.float32).sum(-2)  # [L, N, E]
    weight = xp.ones(logits.shape[1], xp.float32) if mask is None else mask.reshape(-1).astype(xp.float32)
    rows = weight.sum() * logits.shape[0]
    tokens_per_expert = (counts * weight[None, :, None]).sum((0, 1)) / rows
    prob_per_expert = (probs * weight[None, :, None]).sum((0, 1)) / rows
    return (tokens_per_expert * prob_per_expert).sum() * num_experts


# ---- experts ------------------------------------------------------------------------------------

MLP = Callable[[Mapping, object, Callable], object]
"""mlp(expert params, rows h [M, D], matmul) -> [M, D]; see the module docstring."""


def swiglu_experts(act: Callable, *, gate: str = "gate_proj", up: str = "up_proj", down: str = "down_proj") -> MLP:
    """The SwiGLU expert `down(act(gate(h)) * up(h))` over stacked torch Linears of these names."""
    def mlp(p, h, matmul):
        g = matmul(p[gate]["weight"], h, p[gate].get("bias"))
        u = matmul(p[up]["weight"], h, p[up].get("bias"))
        return matmul(p[down]["weight"], act(g) * u, p[down].get("bias"))
    return mlp


def clamped_swiglu_experts(*, alpha: float, limit: float, gate_up: str = "gate_up_proj", down: str = "down_proj"):
    """gpt-oss' expert for `moe.experts_forward` over fused [in, out] tensors with `_bias` companions:
    gate, up = even and odd columns of `gate_up`; gate <= limit, |up| <= limit;
    down((up + 1) * gate * sigmoid(alpha * gate))."""
    def mlp(p, h, matmul):
        xp = ops().xp
        both = matmul(p[gate_up], h, p.get(gate_up + "_bias"), layout="in_out")
        gate, up = xp.minimum(both[..., ::2], limit), xp.clip(both[..., 1::2], -limit, limit)
        glu = gate / (1.0 + xp.exp(-alpha * gate))
        return matmul(p[down], (up + 1) * glu, p.get(down + "_bias"), layout="in_out")
    return mlp


def _tree_map(fn, tree):
    if isinstance(tree, Mapping):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    return None if tree is None else fn(tree)


def _plain_matmul(w, h, bias=None, layout: str = "out_in"):
    """One expert's weight on its rows: h [M, in] @ w -> [M, out]."""
    xp = ops().xp
    y = xp.matmul(h, w.T if layout == "out_in" else w)
    return y if bias is None else y + bias


def _gather(x, weights, indices, experts, mlp):
    """Per token-slot pair, the chosen experts' weights gathered: reads k experts per token."""
    xp = ops().xp
    n, k = indices.shape
    chosen = _tree_map(lambda w: xp.take(w, indices.reshape(-1), axis=0), experts)  # [M, ...]

    def matmul(w, h, bias=None, layout="out_in"):
        spec = "mi,moi->mo" if layout == "out_in" else "mi,mio->mo"
        y = xp.einsum(spec, h, w)
        return y if bias is None else y + bias
    y = mlp(chosen, xp.repeat(x, k, axis=0), matmul)                                  # [M, D]
    return (y.reshape(n, k, -1) * weights[..., None].astype(y.dtype)).sum(1)


def _loop(x, weights, indices, experts, mlp):
    """Per active expert, the rows that chose it (a token picks an expert at most once)."""
    xp = ops().xp
    out = xp.zeros(x.shape, x.dtype)
    flat = np.asarray(indices)
    for e in np.unique(flat):
        rows, slots = np.nonzero(flat == e)
        y = mlp(_tree_map(lambda w: w[int(e)], experts), x[rows], _plain_matmul)
        y = y * weights[rows, slots][:, None].astype(y.dtype)
        out = out.at[rows].add(y) if ops().name == "jax" else _add_rows(out, rows, y)
    return out


def _add_rows(out, rows, y):
    out[rows] += y  # rows are distinct for one expert
    return out


def _sort_pairs(indices, num_experts: int):
    """(order, sorted expert ids, group sizes) of the N * k token-expert pairs, sorted by expert."""
    import jax.numpy as jnp

    flat = indices.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    return order, flat[order], jnp.bincount(flat, length=num_experts).astype(jnp.int32)


def _combine(y_sorted, order, weights):
    """Back from expert order to token order, weighted and summed over each token's k slots."""
    import jax.numpy as jnp

    n, k = weights.shape
    y = jnp.zeros_like(y_sorted).at[order].set(y_sorted)            # a permutation: no collisions
    return (y.reshape(n, k, -1) * weights[..., None].astype(y.dtype)).sum(1)


def _ragged(x, weights, indices, experts, mlp):
    """GPU/TPU: one `lax.ragged_dot` per expert linear over the pairs sorted by expert."""
    from jax import lax

    k = indices.shape[1]
    num_experts = _first_leaf(experts).shape[0]
    order, sorted_experts, sizes = _sort_pairs(indices, num_experts)
    rows = x[order // k]

    def matmul(w, h, bias=None, layout="out_in"):
        contract = 2 if layout == "out_in" else 1
        dims = lax.RaggedDotDimensionNumbers(dot_dimension_numbers=(([1], [contract]), ([], [])),
                                             lhs_ragged_dimensions=[0], rhs_group_dimensions=[0])
        y = lax.ragged_dot_general(h, w, sizes, dims)
        return y if bias is None else y + bias[sorted_experts]
    return _combine(mlp(experts, rows, matmul), order, weights)


def block_rows(pairs: int, num_experts: int) -> int:
    """Rows per block of the CPU grouped path: a power of two in [8, 256] near half the mean rows per
    expert, so the padding (< E * b rows) stays under about half the real rows."""
    return int(min(256, max(8, 2 ** math.floor(math.log2(max(1.0, pairs / num_experts / 2))))))


def _blocks(x, weights, indices, experts, mlp):
    """CPU: sorted pairs padded per expert to blocks of b rows; a scan runs each block on its expert."""
    import jax.numpy as jnp
    from jax import lax

    n, k = indices.shape
    m, num_experts = n * k, _first_leaf(experts).shape[0]
    b = block_rows(m, num_experts)
    order, sorted_experts, sizes = _sort_pairs(indices, num_experts)
    padded = (sizes + b - 1) // b * b
    starts, padded_starts = jnp.cumsum(sizes) - sizes, jnp.cumsum(padded) - padded
    dest = padded_starts[sorted_experts] + jnp.arange(m, dtype=jnp.int32) - starts[sorted_experts]
    num_blocks = -(-(m + num_experts * (b - 1)) // b)  # static: enough for any split of m rows
    rows = jnp.zeros((num_blocks * b, x.shape[-1]), x.dtype).at[dest].set(x[order // k])
    block_expert = jnp.searchsorted(jnp.cumsum(padded), jnp.arange(num_blocks) * b, side="right")
    block_expert = jnp.minimum(block_expert, num_experts - 1)  # blocks past the last hold zeros

    def body(_, xs):
        h, e = xs
        return None, mlp(_tree_map(lambda w: w[e], experts), h, _plain_matmul)

    _, out = lax.scan(body, None, (rows.reshape(num_blocks, b, -1), block_expert))
    return _combine(out.reshape(num_blocks * b, -1)[dest], order, weights)


def _first_leaf(tree):
    return _first_leaf(next(v for v in tree.values() if v is not None)) if isinstance(tree, Mapping) else tree


def pick_strategy(num_pairs: int, num_experts: int) -> str:
    """The expert strategy for the selected backend and M token-expert pairs (see the module docstring)."""
    if ops().name == "numpy":
        return "loop"
    return "gather" if num_pairs <= num_experts else "grouped"


def experts_forward(x, weights, indices, experts: Mapping, *, mlp: MLP, shared: Callable | None = None,
                    strategy: str | None = None):
    """sum_j weights[n, j] * mlp(expert indices[n, j])(x[n]) (+ shared(x)) for x [..., D].

    weights, indices: [N, k] from `route` (N = prod of x's leading dims); experts: stacked expert params
    (leading axis E); shared: a function of x [..., D] added to the output (a shared expert)."""
    lead, d = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, d)
    num_experts = _first_leaf(experts).shape[0]
    strategy = strategy or pick_strategy(indices.size, num_experts)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}")
    if strategy == "gather":
        out = _gather(flat, weights, indices, experts, mlp)
    elif strategy == "loop":
        out = _loop(flat, weights, indices, experts, mlp)
    else:
        import jax

        grouped = _blocks if jax.default_backend() == "cpu" else _ragged
        out = grouped(flat, weights, indices, experts, mlp)
    out = out.reshape(*lead, d).astype(x.dtype)
    return out if shared is None else out + shared(x)


__all__ = ["Router", "route", "load_balancing_loss", "experts_forward", "swiglu_experts", "clamped_swiglu_experts",
           "pick_strategy", "block_rows", "STRATEGIES"]
