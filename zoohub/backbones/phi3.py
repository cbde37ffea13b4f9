"""Phi-3 (Phi-3/3.5-mini, Phi-4-mini): a pre-norm RMSNorm decoder with fused projections and LongRoPE.

- `qkv_proj` holds q, k and v stacked along its rows ([N*H + 2*K*H, D]) and `gate_up_proj` the
  gate and up halves ([2F, D]); the params are these fused tensors, as the checkpoint stores them,
  and the forward splits their outputs (a LoRA adapter on `qkv_proj` adapts all three, as PEFT's does).
- RoPE: `longrope` (older configs: `su`) with per-frequency `short_factor` / `long_factor` and an
  attention factor; RoPE on the first `partial_rotary_factor` of each head (Phi-4-mini: 0.75).
- Optional sliding window on every layer (`sliding_window`, Phi-3-mini's 2047).

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("phi3")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.rotary_dim(), config.rope()[1]["original_max_position_embeddings"]
    (12, 6)
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> params["layers"]["self_attn"]["qkv_proj"]["weight"].shape    # [L, (3 + 2 * 1) * 16, D]
    (2, 80, 48)
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, TINY_WINDOW, DecoderConfig, KVCache, causal_lm_head, is_sliding_array, layer_key, masks_for,
    prepare, rope_tables, run_layers, select, self_attention, tiny_recipe,
)
from zoohub.layers import KeyStream, activation, dropout, embedding, linear, rms_norm

ROPE_TYPES = ("default", "longrope", "su")


def _rope_ok(value) -> bool:
    """transformers' Phi-3 runs only default and longrope RoPE ("su" is longrope's old name)."""
    if value is None:
        return True
    factor = value.get("partial_rotary_factor", 1.0)
    kind = value.get("rope_type", value.get("type", "default"))
    return kind in ROPE_TYPES and isinstance(factor, (int, float)) and 0 < factor <= 1


_ROPE_CHECK = (_rope_ok, f"rope_type in {ROPE_TYPES}, partial_rotary_factor in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class Phi3Config(DecoderConfig):
    """Phi-3 hyperparameters (transformers' `Phi3Config` keys).

    Phi-3.5-mini's config.json (transformers 4.x form, `longrope` with 48 factors each):

    >>> config = Phi3Config.from_hf({"vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
    ...     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    ...     "max_position_embeddings": 131072, "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
    ...     "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [2.0] * 48},
    ...     "sliding_window": 262144})
    >>> theta, rope = config.rope()
    >>> theta, rope["rope_type"], rope["original_max_position_embeddings"], config.rotary_dim()
    (10000.0, 'longrope', 4096, 96)
    >>> import math
    >>> sum(math.prod(s) for s in {**shapes(config), **LM_HEAD.shapes(config, 0)}.values())
    3821079552
    """

    MODEL_TYPE = "phi3"
    # Phi-3 and Phi-4-mini configs name their hub code (`auto_map`); transformers' own Phi3 runs them
    # (zoohub never runs hub code) and reads none of the keys below, which those configs set to the
    # values transformers computes: no biases, dense attention on every layer, no interpolation.
    IGNORED = frozenset({"auto_map"})
    CHECKS = {"rope_scaling": _ROPE_CHECK, "rope_parameters": _ROPE_CHECK,
              "partial_rotary_factor": (lambda v: v is None or 0 < v <= 1, "in (0, 1]"),
              "attention_bias": (lambda v: not v, "false"), "mlp_bias": (lambda v: not v, "false"),
              "lm_head_bias": (lambda v: not v, "false"), "full_attn_mod": (lambda v: v in (None, 1), "1"),
              "interpolate_factor": (lambda v: v in (None, 1), "1")}

    max_position_embeddings: int = 4096
    original_max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    hidden_act: str = "silu"
    partial_rotary_factor: float | None = None  # the top-level form (Phi-4-mini); also in `rope_parameters`
    resid_pdrop: float = 0.0
    embd_pdrop: float = 0.0
    tie_word_embeddings: bool = False

    def rope(self, kind: str = "full_attention") -> tuple[float, dict | None]:
        theta, scaling = super().rope(kind)
        if not scaling:
            return theta, scaling
        scaling = dict(scaling)
        if scaling.get("rope_type", scaling.get("type")) in ("su", "longrope"):
            # transformers' Phi-3: "su" is longrope, and the top-level original length wins over the dict's
            scaling.update(rope_type="longrope", original_max_position_embeddings=self.original_max_position_embeddings)
        return theta, scaling

    def rotary_dim(self, kind: str = "full_attention") -> int:
        factor = (self.rope(kind)[1] or {}).get("partial_rotary_factor", self.partial_rotary_factor)
        return int(self.dim_per_head * (1.0 if factor is None else factor))


def split_qkv(c: Phi3Config, qkv):
    """q [.., N*H], k, v [.., K*H] from the fused projection's output (transformers' slicing)."""
    q, kv = c.num_attention_heads * c.dim_per_head, c.kv_heads * c.dim_per_head
    return qkv[..., :q], qkv[..., q:q + kv], qkv[..., q + kv:]


def _attention_params(p: Mapping) -> dict:
    return {"o_proj": p["o_proj"]}


def _block(c: Phi3Config, ctx: dict, rng):
    norm = lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps)  # noqa: E731
    act = activation(c.hidden_act)
    f = c.intermediate_size

    def block(p, x, info, kv):
        sliding, keys = info["is_sliding"], KeyStream(layer_key(rng, info["index"]))
        attn = p["self_attn"]
        h = norm(p["input_layernorm"], x)
        a, kv = self_attention(_attention_params(attn), h, config=c, rope=select(sliding, ctx["rope"]),
                               mask=select(sliding, ctx["masks"]), scale=c.dim_per_head ** -0.5, kv=kv,
                               index=info["cache_index"], projections=split_qkv(c, linear(attn["qkv_proj"], h)))
        x = x + dropout(dropout(a, c.attention_dropout, keys()), c.resid_pdrop, keys())
        m = p["mlp"]
        gate_up = linear(m["gate_up_proj"], norm(p["post_attention_layernorm"], x))
        y = linear(m["down_proj"], gate_up[..., f:] * act(gate_up[..., :f]))  # transformers' order: gate, then up
        return x + dropout(y, c.resid_pdrop, keys()), kv

    return block


def forward(params, config: Phi3Config, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache). See `decoder` for inputs."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    ctx = {"rope": rope_tables(config, positions), "masks": masks_for(config, positions, key_positions, key_valid)}
    x = embedding(params["embed_tokens"], ids)
    x = dropout(x, config.embd_pdrop, layer_key(rng, config.num_hidden_layers))  # a key no layer uses
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x,
                          per_layer={"is_sliding": is_sliding_array(config)}, cache=cache)
    x = rms_norm(params["norm"], x, eps=config.rms_norm_eps)
    return x if cache is None else (x, cache)


def shapes(c: Phi3Config) -> dict[str, tuple]:
    d, f, h = c.hidden_size, c.intermediate_size, c.dim_per_head
    q, kv = c.num_attention_heads * h, c.kv_heads * h
    out = {"embed_tokens.weight": (c.vocab_size, d), "norm.weight": (d,)}
    for i in range(c.num_hidden_layers):
        p = f"layers.{i}."
        out.update({p + "self_attn.qkv_proj.weight": (q + 2 * kv, d), p + "self_attn.o_proj.weight": (d, q),
                    p + "mlp.gate_up_proj.weight": (2 * f, d), p + "mlp.down_proj.weight": (d, f),
                    p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,)})
    return out


LM_HEAD = causal_lm_head("Phi3ForCausalLM")

# The fused tensors' row blocks (q | k | v, gate | up) do not line up with equal row shards: on 4
# devices Phi-3-mini's 9216 qkv rows would put q heads and k heads in one shard. They split over their
# input features instead (each shard holds a slice of every q, k, v and gate, up row; an all-reduce
# completes the sums), and so do o_proj and down_proj, whose inputs are then whole on every device.
PHI3_SHARDING = (
    (r"\.(qkv_proj|gate_up_proj|o_proj|down_proj)\.weight$", (None, "model")),
) + SHARDING

FAMILIES = {
    "phi3": Family(
        model_type="phi3", config_class=Phi3Config, prefix="model", base_architecture="Phi3Model",
        forward=forward, shapes=shapes, ignored=IGNORED, heads={"causal_lm": LM_HEAD},
        embeddings="embed_tokens", layers="layers", lora_targets=("qkv_proj",), sharding=PHI3_SHARDING,
        # LongRoPE with factors that differ per frequency, an original length (6) the test prompts pass,
        # so they run on the long factors (tests/decoder/test_phi3.py covers the short ones), RoPE on 12
        # of 16 features, and a sliding window shorter than the prompts
        recipe=tiny_recipe("Phi3Config", 35, head_dim=None, original_max_position_embeddings=6,
                           sliding_window=TINY_WINDOW, partial_rotary_factor=0.75, resid_pdrop=0.0, embd_pdrop=0.0,
                           rope_parameters=dict(rope_type="longrope", rope_theta=700.0,
                                                short_factor=[1.0, 1.3, 2.0, 2.5, 3.0, 7.0],
                                                long_factor=[1.5, 4.0, 9.0, 20.0, 33.0, 60.0])),
    ),
}
