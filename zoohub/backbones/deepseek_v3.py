"""DeepSeek-V3 (and R1, Kimi-K2 and Moonlight-style checkpoints with `model_type` deepseek_v3): a
pre-norm mixture-of-experts decoder with multi-head latent attention (MLA).

- Attention (MLA): queries from `q_proj`, or through a low-rank bottleneck `q_a_proj` -> RMSNorm ->
  `q_b_proj` when `q_lora_rank` is set. Keys and values come from one latent: `kv_a_proj_with_mqa`
  gives `kv_lora_rank` latent features (RMSNorm, then `kv_b_proj` expands them to each head's
  `qk_nope_head_dim` key and `v_head_dim` value features) plus `qk_rope_head_dim` features shared by
  every head, the only ones RoPE turns (over adjacent pairs when `rope_interleave`, halves otherwise).
  Keys are [nope, rope] wide, values `v_head_dim`: the KV cache holds both at one width (see `_pad`).
  The softmax scale is `qk_head_dim ** -0.5`, times YaRN's `mscale(factor, mscale_all_dim) ** 2`.
- MLP: the first `first_k_dense_replace` layers a dense SwiGLU, the others a sparse block: a sigmoid
  router with group-limited selection (`n_group` groups scored by their two best biased scores,
  `topk_group` kept), `e_score_correction_bias` choosing experts but not weighting them,
  `norm_topk_prob`, `routed_scaling_factor`, plus `n_shared_experts` always-on experts as one SwiGLU.
- The two kinds of layers run as two stacked groups, each its own `lax.scan`: tensors every layer has
  are held [L, ...], the dense MLP [k, ...], the sparse block's [L - k, ...] (`Family.trailing_layers`);
  each group reads its rows of the attention tensors and its slice of the one KV cache.
- No auxiliary loss: transformers' DeepSeek-V3 balances experts with the bias alone. Attention dropout is
  not applied (0 in every release). The multi-token-prediction layer (`model.layers.61`, V3's
  `num_nextn_predict_layers`) is skipped as transformers skips it; FP8 checkpoints are refused by name.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("deepseek_v3")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> params = init_params(family, config, seed=0)     # random weights, layers and experts stacked
    >>> layers = params["layers"]
    >>> layers["self_attn"]["kv_b_proj"]["weight"].shape, layers["mlp"]["gate_proj"]["weight"].shape
    ((3, 66, 18), (1, 80, 48))
    >>> layers["mlp"]["experts"]["gate_proj"]["weight"].shape   # [L - k, E, F, D]: layers 1 and 2
    (2, 8, 28, 48)
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, DecoderConfig, KVCache, causal_lm_head, masks_for, prepare, rope_tables, run_layers,
    tiny_recipe,
)
from zoohub.backend import ops
from zoohub.layers import activation, apply_rope, attention, embedding, gated_mlp, linear, rms_norm
from zoohub.layers.kv_cache import update_cache
from zoohub.layers.moe import Router, experts_forward, route, swiglu_experts
from zoohub.layers.rope import yarn_mscale

FP8 = ("null: the FP8 (block-quantized) weights of the released deepseek-ai checkpoints are not read; load a "
       "bfloat16 copy, or dequantize with transformers and save_pretrained")
LATENT_EPS = 1e-6  # transformers builds q_a_layernorm / kv_a_layernorm with RMSNorm's default eps, not rms_norm_eps


@dataclass(frozen=True, kw_only=True)
class DeepseekV3Config(DecoderConfig):
    """DeepSeek-V3 hyperparameters (transformers' `DeepseekV3Config` keys; defaults are V3's).

    DeepSeek-V3's config.json (the remote-code form; its FP8 `quantization_config` left out):

    >>> config = DeepseekV3Config.from_hf({"vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
    ...     "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
    ...     "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256, "routed_scaling_factor": 2.5,
    ...     "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64, "v_head_dim": 128,
    ...     "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4,
    ...     "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": True,
    ...     "scoring_func": "sigmoid", "aux_loss_alpha": 0.001, "seq_aux": True, "ep_size": 1,
    ...     "num_nextn_predict_layers": 1, "max_position_embeddings": 163840, "rope_theta": 10000,
    ...     "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
    ...     "original_max_position_embeddings": 4096, "type": "yarn"}, "auto_map": {}})
    >>> config.dim_per_head, config.rotary_dim(), round(config.softmax_scale, 6)
    (192, 64, 0.135234)
    >>> import math     # DeepseekV3ForCausalLM's parameters (untied lm_head), the MTP layer left out
    >>> sum(math.prod(s) for s in {**shapes(config), **LM_HEAD.shapes(config, 0)}.values())
    671026419200
    """

    MODEL_TYPE = "deepseek_v3"
    # qk_head_dim: transformers derives it (nope + rope) and writes it back. The rest are the remote
    # code's training or deployment settings (aux_loss_alpha, seq_aux: a sequence-level loss it adds
    # only in training; ep_size: its expert-parallel degree) and the MTP layer count; auto_map names
    # remote code, which zoohub never runs.
    IGNORED = frozenset({"qk_head_dim", "pretraining_tp", "aux_loss_alpha", "seq_aux", "ep_size",
                         "num_nextn_predict_layers", "num_mtp_layers", "auto_map"})
    CHECKS = {
        "quantization_config": (lambda v: v is None, FP8),
        "scoring_func": (lambda v: v in (None, "sigmoid"), "sigmoid (the router transformers runs)"),
        "topk_method": (lambda v: v in (None, "noaux_tc"), "noaux_tc (group-limited, bias-corrected top-k)"),
        "moe_layer_freq": (lambda v: v in (None, 1), "1 (every layer after first_k_dense_replace sparse)"),
    }

    vocab_size: int = 129280
    hidden_size: int = 7168
    intermediate_size: int = 18432           # F of the dense layers
    moe_intermediate_size: int = 2048        # F of each routed expert
    num_hidden_layers: int = 61
    num_attention_heads: int = 128
    num_key_value_heads: int | None = 128    # must be N: MLA expands keys and values for every head
    n_shared_experts: int = 1                # shared SwiGLU of width n_shared_experts * moe_intermediate_size
    n_routed_experts: int = 256              # E
    num_experts_per_tok: int = 8             # k
    routed_scaling_factor: float = 2.5
    n_group: int | None = 8
    topk_group: int | None = 4
    norm_topk_prob: bool = True
    first_k_dense_replace: int = 3           # leading layers with a dense MLP
    kv_lora_rank: int = 512                  # latent features of keys and values
    q_lora_rank: int | None = 1536           # None: a plain q_proj
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    rope_interleave: bool = True             # RoPE over adjacent pairs of the rope features
    hidden_act: str = "silu"
    attention_bias: bool = False             # biases on q_a_proj, kv_a_proj_with_mqa and o_proj
    max_position_embeddings: int = 4096
    output_router_logits: bool = False       # transformers records router logits; no loss uses them
    tie_word_embeddings: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.num_key_value_heads not in (None, self.num_attention_heads):
            raise ValueError(f"num_key_value_heads={self.num_key_value_heads} must equal num_attention_heads="
                             f"{self.num_attention_heads} (MLA gives every head its own keys and values)")
        self.router()  # the router's own checks (groups divide the experts, top-k) on the values it will use

    @property
    def kv_heads(self) -> int:
        return self.num_attention_heads

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def dim_per_head(self) -> int:
        """The KV cache's width per head: keys' and values' widths differ, so the cache holds both at the
        wider (`head_dim` in config.json is transformers' copy of `qk_rope_head_dim`, never read)."""
        return max(self.qk_head_dim, self.v_head_dim)

    def rotary_dim(self, kind: str = "full_attention") -> int:
        return self.qk_rope_head_dim

    def rope(self, kind: str = "full_attention") -> tuple[float, dict | None]:
        theta, scaling = super().rope(kind)
        if scaling and _rope_type(scaling) == "yarn" and scaling.get("factor") is None:  # transformers' fallback
            scaling = {**scaling, "factor": self.max_position_embeddings / scaling["original_max_position_embeddings"]}
        return theta, scaling

    @property
    def softmax_scale(self) -> float:
        """transformers' `yarn_apply_mscale(rope_parameters, qk_head_dim ** -0.5)`: a scaled RoPE with
        `mscale_all_dim` also scales every feature's logits, by mscale ** 2."""
        scale = self.qk_head_dim ** -0.5
        scaling = self.rope()[1] or {}
        if _rope_type(scaling) != "default" and scaling.get("mscale_all_dim"):
            scale *= yarn_mscale(float(scaling["factor"]), scaling["mscale_all_dim"]) ** 2
        return scale

    @property
    def dense_layers(self) -> int:
        return min(self.first_k_dense_replace, self.num_hidden_layers)

    def router(self) -> Router:
        return Router(num_experts=self.n_routed_experts, top_k=self.num_experts_per_tok, scoring="sigmoid",
                      norm_topk_prob=self.norm_topk_prob, norm_epsilon=1e-20,
                      routed_scaling_factor=self.routed_scaling_factor, num_groups=self.n_group or 1,
                      topk_groups=self.topk_group or 1, group_score="top2_sum")


def _rope_type(scaling: dict) -> str:
    return scaling.get("rope_type", scaling.get("type", "default"))


def _pad(x, width: int):
    """x [..., H] with zero features appended up to `width`. Keys (nope + rope) and values (v_head_dim)
    differ in width, while the KV cache every consumer allocates (generation, beam reordering, the
    serving engine's slots) holds one width per head: rather than a second cache shape through all of
    them, the narrower of the two is cached padded with zeros (V3: values 128 -> 192, a fifth more cache).
    Zero key features add nothing to q.k; zero value features give zero outputs, sliced off."""
    if x.shape[-1] == width:
        return x
    xp = ops().xp
    return xp.concatenate([x, xp.zeros((*x.shape[:-1], width - x.shape[-1]), x.dtype)], axis=-1)


def latent_attention(p, x, *, config: DeepseekV3Config, rope, mask, kv=None, index=None):
    """MLA for x [B, T, D]: (output [B, T, D], updated kv). kv: this layer's (k, v) cache [B, S, N, W]."""
    c, xp = config, ops().xp
    b, t, _ = x.shape
    n, nope, width = c.num_attention_heads, c.qk_nope_head_dim, c.dim_per_head
    latent_norm = lambda q, h: rms_norm(q, h, eps=LATENT_EPS)  # noqa: E731
    if c.q_lora_rank is None:
        q = linear(p["q_proj"], x)
    else:
        q = linear(p["q_b_proj"], latent_norm(p["q_a_layernorm"], linear(p["q_a_proj"], x)))
    q = q.reshape(b, t, n, c.qk_head_dim)
    compressed = linear(p["kv_a_proj_with_mqa"], x)                         # [B, T, r + rope]
    latent, k_rot = compressed[..., :c.kv_lora_rank], compressed[..., c.kv_lora_rank:]
    kv_heads = linear(p["kv_b_proj"], latent_norm(p["kv_a_layernorm"], latent)).reshape(b, t, n, nope + c.v_head_dim)
    cos, sin = rope
    turn = lambda h: apply_rope(h, cos, sin, interleaved=c.rope_interleave)  # noqa: E731
    k_rot = xp.broadcast_to(turn(k_rot[:, :, None, :]), (b, t, n, c.qk_rope_head_dim))  # shared by every head
    q = _pad(xp.concatenate([q[..., :nope], turn(q[..., nope:])], axis=-1), width)
    k = _pad(xp.concatenate([kv_heads[..., :nope], k_rot], axis=-1), width)
    v = _pad(kv_heads[..., nope:], width)
    if kv is not None:
        kv = (update_cache(kv[0], k, index), update_cache(kv[1], v, index))
        k, v = kv
    out = attention(q, k, v, scale=c.softmax_scale, mask=mask)[..., :c.v_head_dim]
    return linear(p["o_proj"], out.reshape(b, t, n * c.v_head_dim)), kv


def _blocks(c: DeepseekV3Config, ctx: dict):
    """(dense layer block, sparse layer block) as functions of (layer params, x, per-layer info, kv)."""
    norm = lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps)  # noqa: E731
    act, router = activation(c.hidden_act), c.router()
    expert = swiglu_experts(act)

    def attend(p, x, info, kv):
        out, kv = latent_attention(p["self_attn"], norm(p["input_layernorm"], x), config=c, rope=ctx["rope"],
                                   mask=ctx["mask"], kv=kv, index=info["cache_index"])
        return x + out, kv

    def dense(p, x, info, kv):
        x, kv = attend(p, x, info, kv)
        m = p["mlp"]
        return x + gated_mlp(m["gate_proj"], m["up_proj"], m["down_proj"], norm(p["post_attention_layernorm"], x),
                             act=act), kv

    def sparse(p, x, info, kv):
        x, kv = attend(p, x, info, kv)
        m, h = p["mlp"], norm(p["post_attention_layernorm"], x)
        logits = linear(m["gate"], h.astype(ops().xp.float32))  # transformers runs the router in float32
        weights, indices = route(router, logits, selection_bias=m["gate"]["e_score_correction_bias"])
        s = m["shared_experts"]
        shared = lambda y: gated_mlp(s["gate_proj"], s["up_proj"], s["down_proj"], y, act=act)  # noqa: E731
        return x + experts_forward(h, weights, indices, m["experts"], mlp=expert, shared=shared), kv

    return dense, sparse


DENSE_MLP = ("gate_proj", "up_proj", "down_proj")


def _rows(tree, start: int, stop: int):
    """Layers [start, stop) of a stacked tree (views on numpy)."""
    if isinstance(tree, dict):
        return {k: _rows(v, start, stop) for k, v in tree.items()}
    return None if tree is None else tree[start:stop]


def forward(params, config: DeepseekV3Config, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache). The dense layers, then the
    sparse ones, each group one `run_layers` over its rows of the attention tensors and of the cache."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions, interleaved=config.rope_interleave)["full_attention"],
           "mask": masks_for(config, positions, key_positions, key_valid)["full_attention"]}
    x = embedding(params["embed_tokens"], ids)
    layers, k, total = params["layers"], config.dense_layers, config.num_hidden_layers
    every = {name: v for name, v in layers.items() if name != "mlp"}
    mlp = layers["mlp"]
    dense_block, sparse_block = _blocks(config, ctx)
    groups = ((0, k, dense_block, {n: mlp[n] for n in DENSE_MLP if n in mlp}),
              (k, total, sparse_block, {n: v for n, v in mlp.items() if n not in DENSE_MLP}))
    for start, stop, block, group_mlp in groups:
        if start == stop:
            continue
        sub = None if cache is None else cache._replace(k=cache.k[start:stop], v=cache.v[start:stop])
        x, sub = run_layers(block, {**_rows(every, start, stop), "mlp": group_mlp}, x, cache=sub)
        if cache is not None and ops().name == "jax":  # numpy wrote through the views already
            cache = cache._replace(k=cache.k.at[start:stop].set(sub.k), v=cache.v.at[start:stop].set(sub.v))
    x = rms_norm(params["norm"], x, eps=config.rms_norm_eps)
    return x if cache is None else (x, cache)


def shapes(c: DeepseekV3Config) -> dict[str, tuple]:
    d, n, e, f = c.hidden_size, c.num_attention_heads, c.n_routed_experts, c.moe_intermediate_size
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,)}
    attn = {"kv_a_proj_with_mqa.weight": (c.kv_lora_rank + c.qk_rope_head_dim, d),
            "kv_a_layernorm.weight": (c.kv_lora_rank,),
            "kv_b_proj.weight": (n * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
            "o_proj.weight": (d, n * c.v_head_dim)}
    if c.q_lora_rank is None:
        attn["q_proj.weight"] = (n * c.qk_head_dim, d)
    else:
        attn.update({"q_a_proj.weight": (c.q_lora_rank, d), "q_a_layernorm.weight": (c.q_lora_rank,),
                     "q_b_proj.weight": (n * c.qk_head_dim, c.q_lora_rank)})
    if c.attention_bias:
        attn.update({f"{m}.bias": attn[f"{m}.weight"][:1] for m in ("kv_a_proj_with_mqa", "o_proj")
                     if f"{m}.weight" in attn})
        if c.q_lora_rank is not None:
            attn["q_a_proj.bias"] = (c.q_lora_rank,)

    def swiglu(prefix: str, width: int) -> dict:
        return {f"{prefix}gate_proj.weight": (width, d), f"{prefix}up_proj.weight": (width, d),
                f"{prefix}down_proj.weight": (d, width)}

    sparse = {"gate.weight": (e, d), "gate.e_score_correction_bias": (e,),
              **swiglu("shared_experts.", f * c.n_shared_experts)}
    for j in range(e):
        sparse.update(swiglu(f"experts.{j}.", f))
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        out.update({p + "self_attn." + name: shape for name, shape in attn.items()})
        out[p + "input_layernorm.weight"] = out[p + "post_attention_layernorm.weight"] = (d,)
        mlp = swiglu("", c.intermediate_size) if i < c.dense_layers else sparse
        out.update({p + "mlp." + name: shape for name, shape in mlp.items()})
    return out


LM_HEAD = causal_lm_head("DeepseekV3ForCausalLM")

# Heads split over "model" where their rows are per head (q_b_proj / q_proj, kv_b_proj); the low-rank
# down-projections feed an RMSNorm over all their features and replicate; experts split by expert
# (expert parallelism); the router and its bias replicate; the rest is `decoder.SHARDING`.
DEEPSEEK_SHARDING = (
    (r"\.experts\.[^.]+\.weight$", ("model", None, None)),
    (r"\.gate\.(weight|e_score_correction_bias)$", ()),
    (r"\.(q_a_proj|kv_a_proj_with_mqa)\.(weight|bias)$", ()),
    (r"\.(q_b_proj|kv_b_proj)\.weight$", ("model", None)),
) + SHARDING

FAMILIES = {
    "deepseek_v3": Family(
        model_type="deepseek_v3", config_class=DeepseekV3Config, prefix="model", base_architecture="DeepseekV3Model",
        forward=forward, shapes=shapes, heads={"causal_lm": LM_HEAD}, embeddings="embed_tokens",
        # V3's multi-token-prediction layer (model.layers.61), which transformers skips on load too
        ignored=IGNORED + (r"(^|\.)layers\.61\.",),
        layers="layers", experts="mlp.experts",
        trailing_layers=r"(^|\.)layers\.mlp\.(gate|experts|shared_experts)(\.|$)",  # the sparse block's tensors
        lora_targets=("q_b_proj", "q_proj", "kv_b_proj"), sharding=DEEPSEEK_SHARDING,
        # 1 dense + 2 sparse layers; keys 20 wide (12 + 8 rope), values 10; a q bottleneck; 8 experts in 4
        # groups (2 kept), top 3, 2 shared; YaRN with an mscale pair (so the softmax scale has mscale ** 2)
        recipe=tiny_recipe("DeepseekV3Config", 35, num_hidden_layers=3, head_dim=None, num_key_value_heads=3,
                           q_lora_rank=20, kv_lora_rank=18, qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=10,
                           moe_intermediate_size=28, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3,
                           n_group=4, topk_group=2, routed_scaling_factor=1.7, first_k_dense_replace=1,
                           tie_word_embeddings=False,
                           rope_parameters=dict(rope_type="yarn", rope_theta=900.0, factor=4.0, mscale=0.8,
                                                mscale_all_dim=1.2, beta_fast=8.0, beta_slow=1.0,
                                                original_max_position_embeddings=32)),
    ),
}
