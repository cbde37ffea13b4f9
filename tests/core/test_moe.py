"""The mixture-of-experts layer against a plain dense reference of the same math (every expert on
every token, combined with one-hot routing weights), on both backends and every strategy, and
routing rules against transformers' routers."""
from __future__ import annotations

import numpy as np
import pytest

from zoohub.backend import using
from zoohub.layers import activation
from zoohub.layers.moe import Router, block_rows, experts_forward, load_balancing_loss, route, swiglu_experts

E, D, F = 6, 10, 7


def _experts(seed=0, bias=False):
    rng = np.random.default_rng(seed)
    out = {"gate_proj": {"weight": rng.normal(0, 0.5, (E, F, D))}, "up_proj": {"weight": rng.normal(0, 0.5, (E, F, D))},
           "down_proj": {"weight": rng.normal(0, 0.5, (E, D, F))}}
    if bias:
        for name, width in (("gate_proj", F), ("up_proj", F), ("down_proj", D)):
            out[name]["bias"] = rng.normal(0, 0.5, (E, width))
    return {k: {n: v.astype(np.float32) for n, v in p.items()} for k, p in out.items()}


def _dense(x, weights, indices, experts):
    """Every expert on every token, then a one-hot mix: the reference, not how zoohub computes."""
    silu = lambda v: v / (1 + np.exp(-v))  # noqa: E731
    lin = lambda p, h, e: h @ p["weight"][e].T + p.get("bias", np.zeros((E, p["weight"].shape[1])))[e]  # noqa: E731
    flat = x.reshape(-1, D).astype(np.float64)
    every = np.stack([lin(experts["down_proj"], silu(lin(experts["gate_proj"], flat, e)) * lin(experts["up_proj"], flat, e), e)
                      for e in range(E)], 1)                                                  # [N, E, D]
    mix = np.zeros((len(flat), E))
    np.put_along_axis(mix, np.asarray(indices), np.asarray(weights, np.float64), 1)
    return (mix[..., None] * every).sum(1).reshape(x.shape)


def _case(tokens, seed=1, k=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (tokens, D)).astype(np.float32)
    logits = rng.normal(0, 1, (tokens, E)).astype(np.float32)
    return x, logits, k


@pytest.mark.parametrize("backend,strategy", [("numpy", None), ("jax", "gather"), ("jax", "grouped"), ("jax", "loop")])
@pytest.mark.parametrize("tokens", [1, 3, 37])
@pytest.mark.parametrize("bias", [False, True])
def test_experts_match_the_dense_reference(backend, strategy, tokens, bias):
    x, logits, k = _case(tokens)
    experts = _experts(bias=bias)
    router = Router(num_experts=E, top_k=k, norm_topk_prob=True)
    with using(backend):
        import zoohub.backend as zb

        o = zb.ops()
        weights, indices = route(router, o.asarray(logits))
        ours = experts_forward(o.asarray(x), weights, indices, {n: {a: o.asarray(v) for a, v in p.items()}
                                                                  for n, p in experts.items()},
                               mlp=swiglu_experts(activation("silu")), strategy=strategy)
    ref = _dense(x, np.asarray(weights), np.asarray(indices), experts)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-5)


def test_jit_picks_gather_for_few_pairs_and_blocks_for_many_and_both_match():
    import jax
    import jax.numpy as jnp

    experts = jax.tree_util.tree_map(jnp.asarray, _experts())
    mlp = swiglu_experts(activation("silu"))
    router = Router(num_experts=E, top_k=2)
    for tokens in (2, 3, 40, 300):  # 4 and 6 pairs (<= E: gather), then 80 and 600 (grouped blocks)
        x, logits, _ = _case(tokens, seed=tokens)

        @jax.jit
        def f(x, logits):
            w, i = route(router, logits)
            return experts_forward(x, w, i, experts, mlp=mlp), w, i
        out, w, i = f(jnp.asarray(x), jnp.asarray(logits))
        np.testing.assert_allclose(np.asarray(out), _dense(x, np.asarray(w), np.asarray(i), _experts()), atol=2e-5)


def test_grouped_gradient_matches_the_dense_reference_gradient():
    import jax
    import jax.numpy as jnp

    x, logits, k = _case(29, seed=3)
    experts = jax.tree_util.tree_map(jnp.asarray, _experts())
    router = Router(num_experts=E, top_k=k, norm_topk_prob=True)
    mlp = swiglu_experts(jax.nn.silu)

    def dense(experts, x, logits):
        w, i = route(router, logits)
        mix = jnp.zeros((x.shape[0], E)).at[jnp.arange(x.shape[0])[:, None], i].set(w)
        lin = lambda p, h: jnp.einsum("nd,efd->nef", h, p["weight"])  # noqa: E731
        g, u = lin(experts["gate_proj"], x), lin(experts["up_proj"], x)
        y = jnp.einsum("nef,edf->ned", jax.nn.silu(g) * u, experts["down_proj"]["weight"])
        return (mix[..., None] * y).sum(1)

    def loss(fn):
        return lambda *a: (fn(*a) ** 2).sum()
    ours = jax.grad(loss(lambda e, x, l: experts_forward(x, *route(router, l), e, mlp=mlp, strategy="grouped")),
                    argnums=(0, 1, 2))(experts, jnp.asarray(x), jnp.asarray(logits))
    ref = jax.grad(loss(dense), argnums=(0, 1, 2))(experts, jnp.asarray(x), jnp.asarray(logits))
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)
    assert np.abs(np.asarray(ours[2])).max() > 1e-3  # the router logits get a gradient through the weights


def _dot_rows(jaxpr, trips=1):
    """(rows of every dot_general times the loop trips around it, primitive names) over a jaxpr."""
    rows, names = 0, set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        if eqn.primitive.name == "dot_general":
            rows += trips * int(np.prod(eqn.outvars[0].aval.shape[:-1]))
        for sub in eqn.params.values():
            inner = getattr(sub, "jaxpr", sub)
            if hasattr(inner, "eqns"):
                r, n = _dot_rows(inner, trips * eqn.params.get("length", 1))
                rows, names = rows + r, names | n
    return rows, names


def test_grouped_work_follows_the_active_experts():
    """The CPU grouped path multiplies (pairs + (E + 1) * b) rows per expert linear, never E * tokens."""
    import jax
    import jax.numpy as jnp

    experts = jax.tree_util.tree_map(jnp.asarray, _experts())
    tokens, k = 500, 2
    x, logits, _ = _case(tokens, seed=4)
    router = Router(num_experts=E, top_k=k)
    fn = lambda x, l: experts_forward(x, *route(router, l), experts, mlp=swiglu_experts(jax.nn.silu))  # noqa: E731
    rows, names = _dot_rows(jax.make_jaxpr(fn)(jnp.asarray(x), jnp.asarray(logits)).jaxpr)
    pairs = tokens * k
    assert "ragged_dot_general" not in names  # on CPU it would lower to every expert behind a mask
    assert 3 * pairs <= rows <= 3 * (pairs + (E + 1) * block_rows(pairs, E))  # three linears per expert
    assert rows < 0.5 * 3 * E * tokens
    # decoding two rows gathers the 4 chosen experts' weights: 4 rows per linear
    rows, _ = _dot_rows(jax.make_jaxpr(fn)(jnp.asarray(x[:2]), jnp.asarray(logits[:2])).jaxpr)
    assert rows == 3 * 2 * k


def _torch_router(kind, logits, k, **kw):
    torch = pytest.importorskip("torch")
    t = torch.tensor(logits)
    if kind == "softmax":  # Mixtral / Qwen-MoE / OLMoE
        probs = torch.softmax(t.float(), -1)
        top, idx = torch.topk(probs, k, -1)
        if kw.get("norm"):
            top = top / top.sum(-1, keepdim=True)
        return top.numpy(), idx.numpy()
    if kind == "topk_softmax":  # gpt-oss
        top, idx = torch.topk(t, k, -1)
        return torch.softmax(top, -1).numpy(), idx.numpy()
    # DeepSeek-V3: sigmoid, correction bias for choosing, group-limited, normalised, scaled
    bias, groups, keep, scale = (torch.tensor(kw["bias"]), kw["groups"], kw["keep"], kw["scale"])
    scores = t.sigmoid()
    choice = scores + bias
    group_scores = choice.view(-1, groups, E // groups).topk(2, dim=-1)[0].sum(-1)
    group_idx = torch.topk(group_scores, k=keep, dim=-1, sorted=False)[1]
    mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    mask = mask.unsqueeze(-1).expand(-1, groups, E // groups).reshape(-1, E)
    idx = torch.topk(choice.masked_fill(~mask.bool(), float("-inf")), k=k, dim=-1, sorted=False)[1]
    w = scores.gather(1, idx)
    w = w / (w.sum(-1, keepdim=True) + 1e-20) * scale
    return w.numpy(), idx.numpy()


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_routing_rules_match_transformers_routers(backend):
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 2, (41, E)).astype(np.float32)
    bias = rng.normal(0, 0.3, (E,)).astype(np.float32)
    cases = [
        (Router(num_experts=E, top_k=2, norm_topk_prob=True), dict(kind="softmax", norm=True), None),
        (Router(num_experts=E, top_k=3), dict(kind="softmax"), None),
        (Router(num_experts=E, top_k=2, order="topk_then_softmax"), dict(kind="topk_softmax"), None),
        (Router(num_experts=E, top_k=2, scoring="sigmoid", norm_topk_prob=True, norm_epsilon=1e-20,
                routed_scaling_factor=2.5, num_groups=3, topk_groups=2),
         dict(kind="deepseek", bias=bias, groups=3, keep=2, scale=2.5), bias),
    ]
    with using(backend):
        for router, ref_kw, selection_bias in cases:
            kind = ref_kw.pop("kind")
            ref_w, ref_i = _torch_router(kind, logits, router.top_k, **ref_kw)
            w, i = route(router, logits if backend == "numpy" else __import__("jax.numpy").numpy.asarray(logits),
                         selection_bias=selection_bias)
            w, i = np.asarray(w), np.asarray(i)
            # unsorted top-k (DeepSeek) may list the same experts in another order: compare as sets
            order, ref_order = np.argsort(i, -1), np.argsort(ref_i, -1)
            np.testing.assert_array_equal(np.take_along_axis(i, order, -1), np.take_along_axis(ref_i, ref_order, -1))
            np.testing.assert_allclose(np.take_along_axis(w, order, -1), np.take_along_axis(ref_w, ref_order, -1),
                                       atol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_load_balancing_loss_matches_transformers(backend):
    torch = pytest.importorskip("torch")
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    rng = np.random.default_rng(6)
    logits = rng.normal(0, 1.5, (3, 2 * 7, E)).astype(np.float32)   # 3 layers, batch 2 x 7 tokens
    mask = np.ones((2, 7), np.int64)
    mask[1, :3] = 0
    for m in (None, mask):
        ref = float(load_balancing_loss_func(tuple(torch.tensor(layer) for layer in logits), E, 2,
                                             None if m is None else torch.tensor(m)))
        with using(backend):
            ours = float(load_balancing_loss(logits, 2, None if m is None else m.reshape(-1)))
        assert abs(ours - ref) <= 1e-5, (ours, ref)


@pytest.mark.parametrize("bias", [False, True])
def test_the_gpu_tpu_path_ragged_dot_matches_the_dense_reference(bias):
    """`lax.ragged_dot` serves GPU/TPU; on CPU it runs (densely, behind a mask), so its wiring is checked here."""
    import jax
    import jax.numpy as jnp

    from zoohub.layers import moe

    x, logits, k = _case(23, seed=7)
    experts = _experts(bias=bias)
    w, i = route(Router(num_experts=E, top_k=k), jnp.asarray(logits))
    ours = moe._ragged(jnp.asarray(x), w, i, jax.tree_util.tree_map(jnp.asarray, experts), swiglu_experts(jax.nn.silu))
    np.testing.assert_allclose(np.asarray(ours), _dense(x, np.asarray(w), np.asarray(i), experts), atol=2e-5)
