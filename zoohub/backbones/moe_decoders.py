"""Mixture-of-experts decoders: Mixtral, Qwen2-MoE (Qwen1.5-MoE), Qwen3-MoE and OLMoE. Each is a
Llama-shaped pre-norm decoder whose MLP is a sparse block: a router (`gate`) picks `num_experts_per_tok`
of the layer's experts per token (`zoohub.layers.moe`); they differ in small, declared ways:

- Mixtral: Mistral attention (sliding window when set); experts `block_sparse_moe.experts.{e}.w1/w3/w2`
  (gate/up/down); the chosen weights always renormalised; `router_jitter_noise` while training.
- Qwen2-MoE: Qwen2 attention (q/k/v biases by `qkv_bias`); a shared expert added to every token,
  scaled by `sigmoid(shared_expert_gate(x))`; `norm_topk_prob`.
- Qwen3-MoE: Qwen3 attention (per-head q/k RMSNorm); `norm_topk_prob`.
- OLMoE: q/k RMSNorm over the whole projection (all heads at once), biases by `attention_bias`.

Experts are held stacked on a leading expert axis (`Family.experts`: `layers.mlp.experts.gate_proj.weight`
[L, E, F, D]) for the grouped expert matmul; files keep transformers' per-expert names, which is what
both the hub checkpoints and transformers 5's `save_pretrained` write. Expert tensors shard over the
mesh's `model` axis on the expert axis (expert parallelism). `fit` adds the load-balancing loss
(`router_aux_loss_coef` x transformers' `load_balancing_loss_func`) when `output_router_logits` is true,
as transformers does when it is given labels, and reports the loss as `aux_loss` either way.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("qwen3_moe")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> params = init_params(family, config, seed=0)     # random weights, layers and experts stacked
    >>> params["layers"]["mlp"]["experts"]["gate_proj"]["weight"].shape   # [L, E, F, D]
    (2, 8, 32, 48)
    >>> aux = {}
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}, aux=aux).shape
    (1, 3, 48)
    >>> aux["router_logits"].shape                                         # [L, B * T, E]
    (2, 3, 8)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, TINY_WINDOW, KVCache, causal_lm_head, is_sliding_array, layer_key, masks_for, prepare,
    rope_tables, run_layers, select, self_attention, tiny_recipe,
)
from zoohub.backbones.llama import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, dropout, embedding, gated_mlp, linear, rms_norm
from zoohub.layers.moe import Router, experts_forward, load_balancing_loss, route, swiglu_experts

# Keys each MoE config reads only at values zoohub implements: every layer sparse.
_ALL_SPARSE = {
    "decoder_sparse_step": (lambda v: v in (None, 1), "1 (every layer a sparse MoE block)"),
    "mlp_only_layers": (lambda v: not v, "[] (no dense-MLP layers)"),
}


@dataclass(frozen=True, kw_only=True)
class MoEConfig:
    """The fields the MoE configs share (mixed in before a decoder config). transformers aliases the
    expert count (`num_experts` <-> `num_local_experts`) and 5.x writes one or the other per family,
    so both are fields and `num_routed_experts` reads whichever the file has."""

    DEFAULT_EXPERTS: ClassVar[int] = 8
    ALWAYS_NORMALISE: ClassVar[bool] = False  # Mixtral renormalises the chosen weights whatever the config

    num_experts: int | None = None
    num_local_experts: int | None = None
    num_experts_per_tok: int = 2             # k
    output_router_logits: bool = False       # transformers adds the aux loss to its loss only when true
    router_aux_loss_coef: float = 0.001

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.num_experts_per_tok <= self.num_routed_experts:
            raise ValueError(f"num_experts_per_tok={self.num_experts_per_tok} of {self.num_routed_experts} experts")

    @property
    def num_routed_experts(self) -> int:
        return self.num_local_experts or self.num_experts or self.DEFAULT_EXPERTS

    def router(self) -> Router:
        return Router(num_experts=self.num_routed_experts, top_k=self.num_experts_per_tok,
                      norm_topk_prob=self.ALWAYS_NORMALISE or bool(getattr(self, "norm_topk_prob", False)))

    @property
    def expert_width(self) -> int:
        return getattr(self, "moe_intermediate_size", None) or self.intermediate_size


@dataclass(frozen=True, kw_only=True)
class MixtralConfig(MoEConfig, MistralConfig):
    """Mixtral: Mistral with a sparse MoE block (`num_local_experts`, top-`num_experts_per_tok`)."""

    MODEL_TYPE = "mixtral"
    DEFAULT_ROPE_THETA = 1e6
    ALWAYS_NORMALISE = True
    rms_norm_eps: float = 1e-5
    sliding_window: int | None = None
    router_jitter_noise: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Qwen2MoeConfig(MoEConfig, Qwen2Config):
    """Qwen2-MoE (Qwen1.5-MoE): Qwen2 with routed experts plus a gated shared expert."""

    MODEL_TYPE = "qwen2_moe"
    CHECKS = _ALL_SPARSE
    DEFAULT_EXPERTS = 60
    qkv_bias: bool = True
    num_experts_per_tok: int = 4
    moe_intermediate_size: int = 1408
    shared_expert_intermediate_size: int = 5632
    norm_topk_prob: bool = False

    def attention_kinds(self) -> list[str]:
        if self.layer_types is not None:
            return list(self.layer_types)
        # Qwen2-MoE's rule (not Qwen2's): every other layer below max_window_layers slides
        slide = self.use_sliding_window and self.sliding_window
        return ["sliding_attention" if slide and (i + 1) % 2 and i < (self.max_window_layers or 0) else "full_attention"
                for i in range(self.num_hidden_layers)]


@dataclass(frozen=True, kw_only=True)
class Qwen3MoeConfig(MoEConfig, Qwen3Config):
    """Qwen3-MoE: Qwen3 attention with routed experts (no shared expert)."""

    MODEL_TYPE = "qwen3_moe"
    CHECKS = _ALL_SPARSE
    DEFAULT_EXPERTS = 128
    num_experts_per_tok: int = 8
    moe_intermediate_size: int = 768
    norm_topk_prob: bool = False

    def attention_kinds(self) -> list[str]:
        # transformers' Qwen3-MoE slides on every layer when use_sliding_window, on none otherwise
        slide = self.use_sliding_window and self.sliding_window
        return ["sliding_attention" if slide else "full_attention"] * self.num_hidden_layers


@dataclass(frozen=True, kw_only=True)
class OlmoeConfig(MoEConfig, LlamaConfig):
    """OLMoE: Llama attention with q/k RMSNorm over the whole projection, and routed experts."""

    MODEL_TYPE = "olmoe"
    CHECKS = {"clip_qkv": (lambda v: v is None, "null (no clamping of q/k/v)")}
    DEFAULT_EXPERTS = 64
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 4096
    num_experts_per_tok: int = 8
    norm_topk_prob: bool = False
    router_aux_loss_coef: float = 0.01


# ---- the forward pass ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """Where a family's MoE tensors live in a layer, and what its attention does."""

    moe: str                      # the sparse block: "mlp" or Mixtral's "block_sparse_moe"
    names: tuple[str, str, str]   # the experts' (gate, up, down) linears
    qk_norm: str | None = None    # None | "head" (per head, Qwen3) | "all" (whole projection, OLMoE)
    shared_expert: bool = False   # Qwen2-MoE


def _bias(c, proj: str) -> bool:
    if isinstance(c, MixtralConfig):  # transformers' Mixtral attention has no biases whatever the config says
        return False
    if isinstance(c, Qwen2MoeConfig):
        return c.qkv_bias and proj != "o_proj"
    return bool(getattr(c, "attention_bias", False))


def _sparse(c, layout: Layout, act):
    """The MoE block of one layer: (params, x [B, T, D], dropout key) -> (y [B, T, D], router logits [B*T, E])."""
    mlp, router = swiglu_experts(act, gate=layout.names[0], up=layout.names[1], down=layout.names[2]), c.router()

    def block(p, x, key):
        jitter = getattr(c, "router_jitter_noise", 0.0)
        if key is not None and jitter:  # Mixtral, training only: the router and experts see x * U(1 -+ j)
            import jax

            x = x * jax.random.uniform(key, x.shape, x.dtype, 1.0 - jitter, 1.0 + jitter)
        logits = linear(p["gate"], x)
        weights, indices = route(router, logits)
        shared = None
        if layout.shared_expert:
            def shared(h):
                s = p["shared_expert"]
                gate = 1.0 / (1.0 + ops().xp.exp(-linear(p["shared_expert_gate"], h)))
                return gate * gated_mlp(s["gate_proj"], s["up_proj"], s["down_proj"], h, act=act)
        y = experts_forward(x, weights, indices, p["experts"], mlp=mlp, shared=shared)
        return y, logits.reshape(-1, logits.shape[-1])

    return block


def _qk_norm(c, layout: Layout):
    norm = lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps)  # noqa: E731
    if layout.qk_norm == "all":  # OLMoE: over all heads' features at once, before the head split
        return lambda p, x: norm(p, x.reshape(*x.shape[:-2], -1)).reshape(x.shape)
    return norm if layout.qk_norm == "head" else None


def _block(c, layout: Layout, ctx: dict, rng):
    norm = lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps)  # noqa: E731
    sparse, qk_norm = _sparse(c, layout, activation(c.hidden_act)), _qk_norm(c, layout)

    def block(p, x, info, kv):
        sliding, keys = info["is_sliding"], KeyStream(layer_key(rng, info["index"]))
        a, kv = self_attention(p["self_attn"], norm(p["input_layernorm"], x), config=c,
                               rope=select(sliding, ctx["rope"]), mask=select(sliding, ctx["masks"]),
                               scale=c.dim_per_head ** -0.5, kv=kv, index=info["cache_index"], qk_norm=qk_norm)
        x = x + dropout(a, c.attention_dropout, keys())
        y, logits = sparse(p[layout.moe], norm(p["post_attention_layernorm"], x), keys())
        return x + y, kv, logits

    return block


def _forward(layout: Layout):
    def forward(params, config, inputs, *, rng=None, cache: KVCache | None = None, aux: dict | None = None):
        """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache). With `aux` (a dict), the
        router logits of every layer go to aux["router_logits"] [L, B*T, E]."""
        ids, positions, key_positions, key_valid = prepare(inputs, cache)
        ctx = {"rope": rope_tables(config, positions), "masks": masks_for(config, positions, key_positions, key_valid)}
        x = embedding(params["embed_tokens"], ids)
        collect = None if aux is None else []
        x, cache = run_layers(_block(config, layout, ctx, rng), params["layers"], x,
                              per_layer={"is_sliding": is_sliding_array(config)}, cache=cache, collect=collect)
        if aux is not None:
            aux["router_logits"] = collect[0]
        x = rms_norm(params["norm"], x, eps=config.rms_norm_eps)
        return x if cache is None else (x, cache)
    return forward


def _shapes(layout: Layout):
    def shapes(c) -> dict[str, tuple]:
        d, h, f, e = c.hidden_size, c.dim_per_head, c.expert_width, c.num_routed_experts
        q, kv = c.num_attention_heads * h, c.kv_heads * h
        out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,)}
        for i in range(c.num_hidden_layers):
            p, m = f"layers.{i}.", f"layers.{i}.{layout.moe}."
            for name, shape in {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q)}.items():
                out[p + f"self_attn.{name}.weight"] = shape
                if _bias(c, name):
                    out[p + f"self_attn.{name}.bias"] = shape[:1]
            if layout.qk_norm:
                whole = layout.qk_norm == "all"
                out[p + "self_attn.q_norm.weight"], out[p + "self_attn.k_norm.weight"] = (q if whole else h,), (kv if whole else h,)
            out[p + "input_layernorm.weight"] = out[p + "post_attention_layernorm.weight"] = (d,)
            out[m + "gate.weight"] = (e, d)
            gate, up, down = layout.names
            for j in range(e):
                out[m + f"experts.{j}.{gate}.weight"] = out[m + f"experts.{j}.{up}.weight"] = (f, d)
                out[m + f"experts.{j}.{down}.weight"] = (d, f)
            if layout.shared_expert:
                s = c.shared_expert_intermediate_size
                out.update({m + "shared_expert.gate_proj.weight": (s, d), m + "shared_expert.up_proj.weight": (s, d),
                            m + "shared_expert.down_proj.weight": (d, s), m + "shared_expert_gate.weight": (1, d)})
        return out
    return shapes


def router_aux_loss(config, aux: dict, inputs) -> tuple:
    """(transformers' load-balancing loss over all layers' router logits, its weight in the training
    loss): `router_aux_loss_coef` when `output_router_logits` is on, else 0 (transformers adds it to
    the loss only then)."""
    mask = inputs.get("attention_mask")
    loss = load_balancing_loss(aux["router_logits"], config.num_experts_per_tok,
                               None if mask is None else mask.reshape(-1))
    return loss, (config.router_aux_loss_coef if config.output_router_logits else 0.0)


# Expert parallelism: the stacked expert axis splits over "model" (each device holds E / model experts
# and XLA moves tokens to them); routers are small and replicate; the rest is `decoder.SHARDING`.
MOE_SHARDING = (
    (r"\.experts\.[^.]+\.(weight|bias)$", ("model", None, None)),
    (r"\.(gate|shared_expert_gate)\.weight$", ()),
) + SHARDING


def _family(model_type: str, config_class, arch: str, layout: Layout, recipe) -> Family:
    return Family(model_type=model_type, config_class=config_class, prefix="model",
                  base_architecture=f"{arch}Model", forward=_forward(layout), shapes=_shapes(layout), ignored=IGNORED,
                  heads={"causal_lm": causal_lm_head(f"{arch}ForCausalLM")}, embeddings="embed_tokens",
                  layers="layers", experts=f"{layout.moe}.experts", aux_loss=router_aux_loss,
                  lora_targets=("q_proj", "v_proj"), sharding=MOE_SHARDING, recipe=recipe)


SWIGLU = ("gate_proj", "up_proj", "down_proj")
# Tiny checkpoints: 4 or 8 experts (they split over a 4-way model axis), top-2 or top-3, odd expert widths.
FAMILIES = {
    "mixtral": _family("mixtral", MixtralConfig, "Mixtral", Layout("block_sparse_moe", ("w1", "w3", "w2")), tiny_recipe(
        "MixtralConfig", 31, num_local_experts=4, num_experts_per_tok=2, intermediate_size=36,
        sliding_window=TINY_WINDOW, rope_theta=777.0, router_aux_loss_coef=0.02)),
    "qwen2_moe": _family("qwen2_moe", Qwen2MoeConfig, "Qwen2Moe", Layout("mlp", SWIGLU, shared_expert=True), tiny_recipe(
        "Qwen2MoeConfig", 32, head_dim=None, num_experts=8, num_experts_per_tok=3, moe_intermediate_size=28,
        shared_expert_intermediate_size=44, use_sliding_window=True, sliding_window=TINY_WINDOW, max_window_layers=1,
        tie_word_embeddings=True, rope_theta=3000.0, router_aux_loss_coef=0.03)),
    "qwen3_moe": _family("qwen3_moe", Qwen3MoeConfig, "Qwen3Moe", Layout("mlp", SWIGLU, qk_norm="head"), tiny_recipe(
        "Qwen3MoeConfig", 33, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True,
        use_sliding_window=True, sliding_window=TINY_WINDOW, rope_theta=2500.0)),
    "olmoe": _family("olmoe", OlmoeConfig, "Olmoe", Layout("mlp", SWIGLU, qk_norm="all"), tiny_recipe(
        "OlmoeConfig", 34, num_experts=4, num_experts_per_tok=2, intermediate_size=44, rope_theta=1500.0,
        attention_bias=True)),
}
