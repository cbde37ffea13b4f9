"""gpt-oss (openai/gpt-oss-20b, -120b): a pre-norm mixture-of-experts decoder.

- Attention: GQA with biases on q/k/v/o, per-head attention sinks (a learned logit in each head's
  softmax denominator), YaRN RoPE, layers alternating sliding-window and full attention (`layer_types`).
- MLP: a router with a bias picks `num_experts_per_tok` of `num_local_experts` experts (top-k of the
  logits, softmax over those k); each expert is a clamped SwiGLU with biases, `(up + 1) * gate *
  sigmoid(alpha * gate)` with gate clamped above and up on both sides at `swiglu_limit`.
- Expert tensors are stored fused, as the checkpoints hold them: `gate_up_proj` [E, D, 2F] with gate and
  up interleaved along the last axis (even columns gate, odd up), `down_proj` [E, F, D], both [in, out],
  with biases [E, 2F] and [E, D]. The MXFP4-quantized form of the released checkpoints is refused.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("gpt_oss")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.attention_kinds()
    ['sliding_attention', 'full_attention']
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, TINY_WINDOW, DecoderConfig, KVCache, causal_lm_head, is_sliding_array, masks_for, prepare,
    rope_tables, run_layers, select, self_attention, tiny_recipe,
)
from zoohub.layers import embedding, linear, rms_norm
from zoohub.backbones.moe_decoders import router_aux_loss
from zoohub.layers.moe import Router, clamped_swiglu_experts, experts_forward, route

# transformers' GptOssConfig falls back to this RoPE when config.json gives none
DEFAULT_ROPE = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
                "original_max_position_embeddings": 4096}
MXFP4 = ("null: the MXFP4-quantized experts of the released openai/gpt-oss checkpoints are not read; load a "
         "bfloat16 copy, or dequantize with transformers (GptOssForCausalLM.from_pretrained(..., "
         "quantization_config=Mxfp4Config(dequantize=True))) and save_pretrained")


@dataclass(frozen=True, kw_only=True)
class GptOssConfig(DecoderConfig):
    """gpt-oss hyperparameters (transformers' `GptOssConfig` keys).

    gpt-oss-20b's config.json, less its MXFP4 `quantization_config` (transformers 4.x RoPE keys):

    >>> config = GptOssConfig.from_hf({"vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880,
    ...     "num_hidden_layers": 24, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    ...     "num_local_experts": 32, "num_experts_per_tok": 4, "experts_per_token": 4, "sliding_window": 128,
    ...     "rope_theta": 150000, "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
    ...     "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096},
    ...     "initial_context_length": 4096, "swiglu_limit": 7.0, "router_aux_loss_coef": 0.9})
    >>> config.attention_kinds()[:3], config.rope()[1]["rope_type"]
    (['sliding_attention', 'full_attention', 'sliding_attention'], 'yarn')
    >>> import math     # GptOssForCausalLM's parameters (untied lm_head)
    >>> sum(math.prod(s) for s in {**shapes(config), **LM_HEAD.shapes(config, 0)}.values())
    20914757184
    """

    MODEL_TYPE = "gpt_oss"
    DEFAULT_ROPE_THETA = 150000.0
    # hidden_act: the experts use their own clamped SwiGLU, never `hidden_act`; the other two are
    # the original release's copies of `num_experts_per_tok` and of the YaRN original length.
    IGNORED = frozenset({"hidden_act", "experts_per_token", "initial_context_length"})
    CHECKS = {"quantization_config": (lambda v: v is None, MXFP4)}

    vocab_size: int = 201088
    hidden_size: int = 2880
    intermediate_size: int = 2880            # F, per expert
    num_hidden_layers: int = 36
    num_attention_heads: int = 64
    num_key_value_heads: int | None = 8
    head_dim: int | None = 64
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    sliding_window: int | None = 128
    attention_bias: bool = True
    num_local_experts: int = 128             # E
    num_experts_per_tok: int = 4             # k
    swiglu_alpha: float = 1.702
    swiglu_limit: float = 7.0
    router_aux_loss_coef: float = 0.001      # training: weight of the load-balancing loss
    output_router_logits: bool = False       # transformers adds that loss to its `loss` only when set
    tie_word_embeddings: bool = False

    def attention_kinds(self) -> list[str]:
        if self.layer_types is not None:
            return list(self.layer_types)
        return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(self.num_hidden_layers)]

    def rope(self, kind: str = "full_attention") -> tuple[float, dict | None]:
        theta, scaling = super().rope(kind)
        return theta, (scaling if scaling else dict(DEFAULT_ROPE))

    @property
    def router(self) -> Router:
        return Router(num_experts=self.num_local_experts, top_k=self.num_experts_per_tok, order="topk_then_softmax")


def _block(c: GptOssConfig, ctx: dict):
    """The decoder layer as a function of (layer params, x, per-layer info, kv)."""
    norm = lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps, scale_dtype_first=True)  # noqa: E731
    expert = clamped_swiglu_experts(alpha=c.swiglu_alpha, limit=c.swiglu_limit)
    router = c.router

    def block(p, x, info, kv):
        sliding, a = info["is_sliding"], p["self_attn"]
        out, kv = self_attention(a, norm(p["input_layernorm"], x), config=c, rope=select(sliding, ctx["rope"]),
                                 mask=select(sliding, ctx["masks"]), scale=c.dim_per_head ** -0.5, kv=kv,
                                 index=info["cache_index"], sinks=a["sinks"])
        x = x + out
        m, h = p["mlp"], norm(p["post_attention_layernorm"], x)
        logits = linear(m["router"], h)
        weights, indices = route(router, logits)
        return x + experts_forward(h, weights, indices, m["experts"], mlp=expert), kv, logits.reshape(-1, logits.shape[-1])

    return block


def forward(params, config: GptOssConfig, inputs, *, rng=None, cache: KVCache | None = None, aux: dict | None = None):
    """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache); with `aux` (a dict), the
    router logits of every layer go to aux["router_logits"] [L, B*T, E]. gpt-oss has no dropout but on
    attention probabilities, which zoohub does not apply (`attention_dropout` is 0 in every release)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions), "masks": masks_for(config, positions, key_positions, key_valid)}
    x = embedding(params["embed_tokens"], ids)
    collect = None if aux is None else []
    x, cache = run_layers(_block(config, ctx), params["layers"], x,
                          per_layer={"is_sliding": is_sliding_array(config)}, cache=cache, collect=collect)
    if aux is not None:
        aux["router_logits"] = collect[0]
    x = rms_norm(params["norm"], x, eps=config.rms_norm_eps, scale_dtype_first=True)
    return x if cache is None else (x, cache)


def shapes(c: GptOssConfig) -> dict[str, tuple]:
    d, f, h, e = c.hidden_size, c.intermediate_size, c.dim_per_head, c.num_local_experts
    n, k = c.num_attention_heads, c.kv_heads
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,)}
    layer = {"self_attn.q_proj.weight": (n * h, d), "self_attn.k_proj.weight": (k * h, d),
             "self_attn.v_proj.weight": (k * h, d), "self_attn.o_proj.weight": (d, n * h), "self_attn.sinks": (n,),
             "mlp.router.weight": (e, d), "mlp.router.bias": (e,),
             "mlp.experts.gate_up_proj": (e, d, 2 * f), "mlp.experts.gate_up_proj_bias": (e, 2 * f),
             "mlp.experts.down_proj": (e, f, d), "mlp.experts.down_proj_bias": (e, d),
             "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,)}
    if c.attention_bias:
        layer.update({f"self_attn.{p}.bias": layer[f"self_attn.{p}.weight"][:1] for p in ("q_proj", "k_proj", "v_proj", "o_proj")})
    for i in range(c.num_hidden_layers):
        out.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    return out


LM_HEAD = causal_lm_head("GptOssForCausalLM")

# Attention as `decoder.SHARDING` (heads over "model"); experts split over "model" by expert (expert
# parallelism: each device holds E / model whole experts); the router and the sinks replicate.
GPT_OSS_SHARDING = (
    (r"\.experts\.(gate_up_proj|down_proj)(_bias)?$", ("model",)),
    (r"\.router\.(weight|bias)$", ()),
    (r"\.sinks$", ()),
) + SHARDING

FAMILIES = {
    "gpt_oss": Family(
        model_type="gpt_oss", config_class=GptOssConfig, prefix="model", base_architecture="GptOssModel",
        forward=forward, shapes=shapes, ignored=IGNORED, heads={"causal_lm": LM_HEAD},
        embeddings="embed_tokens", layers="layers", aux_loss=router_aux_loss, lora_targets=("q_proj", "v_proj"),
        sharding=GPT_OSS_SHARDING,
        # 8 experts (4 split per device on the test mesh), top 3; a limit the tiny activations reach, so the
        # clamps matter; YaRN off its defaults; a window shorter than the test prompts on the sliding layer
        recipe=tiny_recipe("GptOssConfig", 23, initializer_range=0.3, intermediate_size=40, num_local_experts=8, num_experts_per_tok=3,
                           swiglu_alpha=1.5, swiglu_limit=2.5, sliding_window=TINY_WINDOW, attention_bias=True,
                           layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=False,
                           rope_parameters=dict(rope_type="yarn", rope_theta=700.0, factor=4.0, beta_fast=8.0,
                                                beta_slow=1.0, truncate=False, original_max_position_embeddings=32)),
    ),
}
