"""SmolLM3: a Llama whose attention skips RoPE on some layers ("NoPE" layers).

`no_rope_layers[i]` is 1 where layer i rotates q and k, 0 where it does not (by default every
`no_rope_layer_interval`-th layer goes without); with `use_sliding_window`, the layers without RoPE
attend through a sliding window. Tensor names and shapes are Llama's.

Under `lax.scan` the per-layer choice is traced, so a layer without RoPE is given the identity
rotation (cos 1, sin 0), which leaves q and k bit-for-bit unchanged.

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("smollm3")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> config.rope_layers(), config.attention_kinds()
    ([True, False, True], ['full_attention', 'sliding_attention', 'full_attention'])
    >>> params = init_params(family, config, seed=0)     # random weights, layers stacked
    >>> family.forward(params, config, {"input_ids": np.array([[5, 6, 7]])}).shape
    (1, 3, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoohub.backbones.base import Family
from zoohub.backbones.decoder import (
    IGNORED, SHARDING, TINY_WINDOW, KVCache, causal_lm_head, is_sliding_array, layer_key, masks_for, prepare,
    rope_tables, run_layers, select, self_attention, tiny_recipe,
)
from zoohub.backbones.llama import LlamaConfig, shapes
from zoohub.backend import ops
from zoohub.layers import KeyStream, activation, dropout, embedding, gated_mlp, rms_norm


@dataclass(frozen=True, kw_only=True)
class SmolLM3Config(LlamaConfig):
    """SmolLM3 hyperparameters (transformers' `SmolLM3Config` keys).

    >>> config = SmolLM3Config.from_hf({"vocab_size": 97, "hidden_size": 48, "intermediate_size": 80,
    ...     "num_hidden_layers": 8, "num_attention_heads": 3})
    >>> config.rope_layers().count(False), config.rope()[0]   # every 4th layer without RoPE; 2e6 base
    (2, 2000000.0)
    """

    MODEL_TYPE = "smollm3"
    # SmolLM3-3B's config carries Qwen2's key; transformers' SmolLM3 takes its sliding layers from
    # `layer_types` / `no_rope_layers` and never reads it.
    IGNORED = frozenset({"max_window_layers"})
    DEFAULT_ROPE_THETA = 2_000_000.0

    max_position_embeddings: int = 32768
    use_sliding_window: bool = False
    no_rope_layers: list | None = None
    no_rope_layer_interval: int = 4
    tie_word_embeddings: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.no_rope_layers is not None and len(self.no_rope_layers) != self.num_hidden_layers:
            raise ValueError(f"no_rope_layers has {len(self.no_rope_layers)} entries for {self.num_hidden_layers} layers")

    def rope_layers(self) -> list[bool]:
        """Per layer: whether its attention applies RoPE (transformers' default rule when unset)."""
        if self.no_rope_layers is not None:
            return [bool(v) for v in self.no_rope_layers]
        return [(i + 1) % self.no_rope_layer_interval != 0 for i in range(self.num_hidden_layers)]

    def attention_kinds(self) -> list[str]:
        if self.layer_types is not None:
            return list(self.layer_types)
        slide = self.use_sliding_window and self.sliding_window is not None
        return ["sliding_attention" if slide and not rope else "full_attention" for rope in self.rope_layers()]


def _identity(table: dict) -> dict:
    """The rotation that turns nothing, in the shapes of `table`'s (cos, sin)."""
    xp = ops().xp
    return {kind: (xp.ones_like(cos), xp.zeros_like(sin)) for kind, (cos, sin) in table.items()}


def _pick(use_rope, rope, identity):
    if isinstance(use_rope, (bool, np.bool_)):
        return rope if use_rope else identity
    xp = ops().xp
    return tuple(xp.where(use_rope, a, b) for a, b in zip(rope, identity))


def _block(c: SmolLM3Config, ctx: dict, rng):
    norm = lambda p, x: rms_norm(p, x, eps=c.rms_norm_eps)  # noqa: E731
    act = activation(c.hidden_act)

    def block(p, x, info, kv):
        sliding, keys = info["is_sliding"], KeyStream(layer_key(rng, info["index"]))
        rope = _pick(info["use_rope"], select(sliding, ctx["rope"]), select(sliding, ctx["identity"]))
        a, kv = self_attention(p["self_attn"], norm(p["input_layernorm"], x), config=c, rope=rope,
                               mask=select(sliding, ctx["masks"]), scale=c.dim_per_head ** -0.5, kv=kv,
                               index=info["cache_index"])
        x = x + dropout(a, c.attention_dropout, keys())
        m = p["mlp"]
        x = x + gated_mlp(m["gate_proj"], m["up_proj"], m["down_proj"], norm(p["post_attention_layernorm"], x), act=act)
        return x, kv

    return block


def forward(params, config: SmolLM3Config, inputs, *, rng=None, cache: KVCache | None = None):
    """Final hidden states [B, T, D]; with `cache`, (hidden, updated cache)."""
    ids, positions, key_positions, key_valid = prepare(inputs, cache)
    rope = rope_tables(config, positions)
    ctx = {"rope": rope, "identity": _identity(rope), "masks": masks_for(config, positions, key_positions, key_valid)}
    x = embedding(params["embed_tokens"], ids)
    per_layer = {"is_sliding": is_sliding_array(config), "use_rope": np.array(config.rope_layers())}
    x, cache = run_layers(_block(config, ctx, rng), params["layers"], x, per_layer=per_layer, cache=cache)
    x = rms_norm(params["norm"], x, eps=config.rms_norm_eps)
    return x if cache is None else (x, cache)


FAMILIES = {
    "smollm3": Family(
        model_type="smollm3", config_class=SmolLM3Config, prefix="model", base_architecture="SmolLM3Model",
        forward=forward, shapes=shapes, ignored=IGNORED, heads={"causal_lm": causal_lm_head("SmolLM3ForCausalLM")},
        embeddings="embed_tokens", layers="layers", lora_targets=("q_proj", "v_proj"), sharding=SHARDING,
        # the middle of 3 layers goes without RoPE and slides (a window shorter than the test prompts)
        recipe=tiny_recipe("SmolLM3Config", 32, num_hidden_layers=3, no_rope_layer_interval=2,
                           use_sliding_window=True, sliding_window=TINY_WINDOW, rope_theta=6000.0),
    ),
}
