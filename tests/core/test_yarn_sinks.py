"""Layer-core pieces of the gpt_oss and deepseek_v3 families against transformers: YaRN RoPE
frequencies and attention factor (`ROPE_INIT_FUNCTIONS["yarn"]`), and attention with sinks."""
from __future__ import annotations

import numpy as np
import pytest

from zoohub.backend import ops, using
from zoohub.layers import attention, causal_mask, rope_frequencies

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

YARN = {  # gpt-oss's own settings (truncate off), DeepSeek-V3's (an mscale pair), others off the defaults
    "gpt_oss": dict(rope_type="yarn", rope_theta=150000.0, factor=32.0, beta_fast=32.0, beta_slow=1.0,
                    truncate=False, original_max_position_embeddings=4096),
    "deepseek": dict(rope_type="yarn", rope_theta=10000.0, factor=40.0, beta_fast=32, beta_slow=1, mscale=1.0,
                     mscale_all_dim=1.0, original_max_position_embeddings=4096),
    "mscale": dict(rope_type="yarn", rope_theta=500.0, factor=4.0, beta_fast=8, beta_slow=2, mscale=0.7,
                   mscale_all_dim=1.3, original_max_position_embeddings=32),
    "defaults": dict(rope_type="yarn", rope_theta=1000.0, factor=2.0, original_max_position_embeddings=32),
    "attention_factor": dict(rope_type="yarn", rope_theta=1000.0, factor=8.0, attention_factor=0.9,
                             original_max_position_embeddings=16),
}


@pytest.mark.parametrize("case", sorted(YARN))
def test_yarn_frequencies_match_transformers(case):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    head_dim, max_len = 64, 256
    config = transformers.LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                                      max_position_embeddings=max_len, rope_parameters=dict(YARN[case]))
    ref_freq, ref_factor = ROPE_INIT_FUNCTIONS["yarn"](config)
    ours, factor = rope_frequencies(head_dim, YARN[case]["rope_theta"], YARN[case])
    np.testing.assert_allclose(ours, ref_freq.numpy(), rtol=1e-6)
    assert factor == pytest.approx(ref_factor, rel=1e-7)
    plain, _ = rope_frequencies(head_dim, YARN[case]["rope_theta"])
    assert (ours / plain).min() == pytest.approx(1 / YARN[case]["factor"], rel=1e-5)  # slow ones divided
    assert ours[0] == pytest.approx(plain[0])                                       # the fastest one kept


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_attention_with_sinks_matches_gpt_oss_eager(backend):
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    rng = np.random.default_rng(3)
    b, t, n, k, h = 2, 6, 4, 2, 8
    q, key, v = (rng.normal(size=s).astype(np.float32) for s in ((b, t, n, h), (b, t, k, h), (b, t, k, h)))
    sinks = rng.normal(size=n).astype(np.float32) * 2
    pos = np.arange(t)[None].repeat(b, 0)
    valid = np.ones((b, t), bool)
    valid[1, :2] = False  # a left-padded row
    mask = valid[:, None, None, :] & causal_mask(pos, pos, window=3)
    module = torch.nn.Module()
    module.num_key_value_groups, module.training = n // k, False
    module.sinks = torch.from_numpy(sinks)
    additive = torch.from_numpy(np.where(mask, 0.0, -1e30).astype(np.float32))
    tt = lambda a: torch.from_numpy(a).transpose(1, 2)  # noqa: E731  BTNH -> BNTH
    ref, _ = eager_attention_forward(module, tt(q), tt(key), tt(v), additive, scaling=h ** -0.5)
    with using(backend):
        xp = ops().xp
        ours = attention(*(xp.asarray(a) for a in (q, key, v)), scale=h ** -0.5, mask=xp.asarray(mask),
                         sinks=xp.asarray(sinks))
        plain = attention(*(xp.asarray(a) for a in (q, key, v)), scale=h ** -0.5, mask=xp.asarray(mask))
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), atol=1e-6)
    assert np.abs(np.asarray(plain) - ref.numpy()).max() > 1e-2  # the sinks do take probability mass


@pytest.mark.parametrize("backend,strategy", [("numpy", None), ("jax", "gather"), ("jax", "grouped")])
def test_clamped_swiglu_experts_match_gpt_oss_experts(backend, strategy):
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    from zoohub.layers.moe import Router, clamped_swiglu_experts, experts_forward, route

    config = transformers.GptOssConfig(hidden_size=12, intermediate_size=10, num_local_experts=5, swiglu_alpha=1.3,
                                       swiglu_limit=1.5)
    torch.manual_seed(0)
    ref = GptOssExperts(config)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.6)  # biases too, and large enough that both clamps bite
    rng = np.random.default_rng(1)
    x, logits = rng.normal(size=(9, 12)).astype(np.float32), rng.normal(size=(9, 5)).astype(np.float32)
    router = Router(num_experts=5, top_k=2, order="topk_then_softmax")
    experts = {name: p.detach().numpy() for name, p in ref.named_parameters()}
    with using(backend):
        xp = ops().xp
        weights, indices = route(router, xp.asarray(logits))
        ours = experts_forward(xp.asarray(x), weights, indices, {k: xp.asarray(v) for k, v in experts.items()},
                               mlp=clamped_swiglu_experts(alpha=1.3, limit=1.5), strategy=strategy)
        with torch.no_grad():
            expected = ref(torch.from_numpy(x), torch.from_numpy(np.asarray(indices).astype(np.int64)),
                           torch.from_numpy(np.array(weights))).numpy()
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5)
    gate_up = x @ experts["gate_up_proj"][0] + experts["gate_up_proj_bias"][0]
    assert (gate_up[:, ::2] > 1.5).any() and (np.abs(gate_up[:, 1::2]) > 1.5).any()  # the clamps were reached
