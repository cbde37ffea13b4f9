"""ViT: a pre-norm Transformer encoder over image patches, with a CLS token and learned positions.

Tensor names are the checkpoint file's (`vit.encoder.layer.N.attention.attention.query`), which
transformers 5 still writes and reads, though its modules are renamed at run time (`layers.N.q_proj`).

    >>> import numpy as np
    >>> from zoohub.backbones import get_family
    >>> from zoohub.backbones.layout import init_params
    >>> family = get_family("vit")
    >>> config = family.config_class.from_hf(family.recipe.kwargs)
    >>> pixels = np.zeros((1, 3, 16, 16), np.float32)
    >>> family.forward(init_params(family, config), config, {"pixel_values": pixels}).shape  # CLS + 16 patches
    (1, 17, 48)
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.backbones.base import Family, Head, ModelConfig, TinyRecipe
from zoohub.backend import ops
from zoohub.errors import InputError
from zoohub.layers import KeyStream, activation, attention, dropout, layer_norm, linear


@dataclass(frozen=True, kw_only=True)
class ViTConfig(ModelConfig):
    """ViT hyperparameters: patch embedding, CLS token, pre-norm encoder blocks.

    >>> config = ViTConfig.from_hf({"image_size": 224, "patch_size": 16})
    >>> config.num_patches
    196
    """

    MODEL_TYPE = "vit"

    hidden_size: int = 768           # D
    num_hidden_layers: int = 12
    num_attention_heads: int = 12    # N
    intermediate_size: int = 3072    # F
    hidden_act: str = "gelu"         # exact erf GELU, as in transformers
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16             # P
    num_channels: int = 3            # C
    qkv_bias: bool = True
    encoder_stride: int = 16         # only used by ViTForMaskedImageModeling's decoder
    pooler_output_size: int | None = None
    pooler_act: str = "tanh"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def patch_embed(params, config: ViTConfig, pixel_values):
    """[B, C, H, W] -> [B, L, D] patches: the stride-P PxP convolution as one matmul."""
    b, c, h, w = pixel_values.shape
    p = config.patch_size
    x = pixel_values.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)  # B, h, w, C, P, P
    x = x.reshape(b, (h // p) * (w // p), c * p * p)
    kernel = params["weight"]  # [D, C, P, P]
    return x @ kernel.reshape(kernel.shape[0], -1).T + params["bias"]


def forward(params, config: ViTConfig, inputs, *, rng=None):
    """Hidden states [B, 1 + L, D] (CLS first, after the final LayerNorm) for {pixel_values: [B, C, H, W]}."""
    xp = ops().xp
    keys = KeyStream(rng)
    pixels = inputs["pixel_values"]
    if tuple(pixels.shape[1:]) != (config.num_channels, config.image_size, config.image_size):
        # transformers would interpolate the position table; zoohub keeps the trained resolution.
        raise InputError(
            f"pixel_values have shape {tuple(pixels.shape)}; this ViT expects "
            f"[B, {config.num_channels}, {config.image_size}, {config.image_size}] (use the task's preprocessor)")
    emb = params["embeddings"]
    dtype = emb["patch_embeddings"]["projection"]["weight"].dtype
    x = patch_embed(emb["patch_embeddings"]["projection"], config, pixels.astype(dtype))
    b, _, d = x.shape
    cls = xp.broadcast_to(emb["cls_token"].astype(x.dtype), (b, 1, d))
    x = xp.concatenate([cls, x], axis=1) + emb["position_embeddings"]
    x = dropout(x, config.hidden_dropout_prob, keys())
    t = x.shape[1]
    n = config.num_attention_heads
    act = activation(config.hidden_act)
    eps = config.layer_norm_eps
    for i in range(config.num_hidden_layers):
        layer = params["encoder"]["layer"][str(i)]
        h = layer_norm(layer["layernorm_before"], x, eps=eps)
        sa = layer["attention"]["attention"]
        q, k, v = (linear(sa[name], h).reshape(b, t, n, d // n) for name in ("query", "key", "value"))
        a = attention(q, k, v, scale=(d // n) ** -0.5).reshape(b, t, d)
        x = x + dropout(linear(layer["attention"]["output"]["dense"], a), config.hidden_dropout_prob, keys())
        h = layer_norm(layer["layernorm_after"], x, eps=eps)
        h = linear(layer["output"]["dense"], act(linear(layer["intermediate"]["dense"], h)))
        x = x + dropout(h, config.hidden_dropout_prob, keys())
    return layer_norm(params["layernorm"], x, eps=eps)


def shapes(c: ViTConfig) -> dict[str, tuple]:
    d, f, p = c.hidden_size, c.intermediate_size, c.patch_size
    out = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.position_embeddings": (1, c.num_patches + 1, d),
        "embeddings.patch_embeddings.projection.weight": (d, c.num_channels, p, p),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,), "layernorm.bias": (d,),
    }
    for i in range(c.num_hidden_layers):
        pre = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            out[pre + f"attention.attention.{name}.weight"] = (d, d)
            if c.qkv_bias:
                out[pre + f"attention.attention.{name}.bias"] = (d,)
        out.update({
            pre + "attention.output.dense.weight": (d, d), pre + "attention.output.dense.bias": (d,),
            pre + "intermediate.dense.weight": (f, d), pre + "intermediate.dense.bias": (f,),
            pre + "output.dense.weight": (d, f), pre + "output.dense.bias": (d,),
            pre + "layernorm_before.weight": (d,), pre + "layernorm_before.bias": (d,),
            pre + "layernorm_after.weight": (d,), pre + "layernorm_after.bias": (d,),
        })
    return out


def pooler_shapes(c: ViTConfig) -> dict[str, tuple]:
    """ViTModel checkpoints carry a pooler; ViTForImageClassification has none."""
    width = c.pooler_output_size or c.hidden_size
    return {"pooler.dense.weight": (width, c.hidden_size), "pooler.dense.bias": (width,)}


def image_classifier(params, c: ViTConfig, hidden, inputs, *, rng=None):
    """ViTForImageClassification: a linear layer on the final CLS state (no pooler, no dropout)."""
    return linear(params["classifier"], hidden[:, 0])


FAMILIES = {
    "vit": Family(
        model_type="vit", config_class=ViTConfig, prefix="vit", base_architecture="ViTModel",
        forward=forward, shapes=shapes, optional_shapes=pooler_shapes, input_kind="image",
        max_length=lambda c: None,
        lora_targets=("query", "value"),
        # transformers 5 runs ViT's modules under new names; PEFT adapters name those.
        peft_names=((r"\.encoder\.layer\.", ".layers."), (r"\.attention\.attention\.query$", ".attention.q_proj"),
                    (r"\.attention\.attention\.key$", ".attention.k_proj"),
                    (r"\.attention\.attention\.value$", ".attention.v_proj"),
                    (r"\.attention\.output\.dense$", ".attention.o_proj"), (r"\.intermediate\.dense$", ".mlp.fc1"),
                    (r"\.output\.dense$", ".mlp.fc2")),
        sharding=(
            (r"\.(query|key|value|intermediate\.dense)\.weight$", ("model", None)),
            (r"\.(query|key|value|intermediate\.dense)\.bias$", ("model",)),
            (r"\.(attention\.output\.dense|layer\.\d+\.output\.dense)\.weight$", (None, "model")),
            (r"(position_embeddings|cls_token)$", ()),
        ),
        # 16x16 images in patches of 4; the image processor of the test checkpoint is non-default too.
        recipe=TinyRecipe(config="ViTConfig", seed=44, tokenizer="image", kwargs=dict(
            hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80, image_size=16,
            patch_size=4, num_channels=3, layer_norm_eps=1e-6, initializer_range=0.3, num_labels=3,
            id2label={0: "red", 1: "green", 2: "blue"}, label2id={"red": 0, "green": 1, "blue": 2})),
        heads={
            "image_classifier": Head(
                task="image_classifier", architecture="ViTForImageClassification", apply=image_classifier,
                trained_with_lora=("classifier",),
                shapes=lambda c, n: {"classifier.weight": (n, c.hidden_size), "classifier.bias": (n,)},
            ),
        },
    ),
}
