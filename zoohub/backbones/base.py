"""What a model family declares: its config class, backbone forward, tensor shapes and task heads.

Families register themselves in `zoohub.backbones.FAMILY_MODULES` (model_type -> module); each
module exposes `FAMILY` (or `FAMILIES` for several model_types sharing one file).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from zoohub.errors import UnsupportedConfigError

# Config keys that never change the math; everything else unknown is passed through on save.
PASSTHROUGH_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "_name_or_path",
    "id2label", "label2id", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id",
    "decoder_start_token_id", "use_cache", "return_dict", "output_hidden_states", "output_attentions",
    "problem_type", "finetuning_task", "gradient_checkpointing", "tie_word_embeddings",
})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Base for family configs. Field names are transformers' own config keys, so each
    hyperparameter is written once and `from_hf`/`to_hf` are generic.

    Subclasses list, in `CHECKS`, config keys that change the math and which values this code
    implements; any other value is rejected by name instead of silently ignored.

    >>> from zoohub.backbones import get_family
    >>> config = get_family("bert").config_class.from_hf({"vocab_size": 97, "hidden_size": 48,
    ...     "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 80, "_name_or_path": "x"})
    >>> config.to_hf()["_name_or_path"]  # non-math keys pass through to the saved config.json
    'x'
    """

    MODEL_TYPE: ClassVar[str] = ""
    # key -> (predicate on the value that says it is implemented, description of what is).
    CHECKS: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = {}
    # Older transformers key -> our field name.
    RENAMES: ClassVar[dict[str, str]] = {}

    extra: dict = field(default_factory=dict, compare=False, repr=False)
    """Keys that do not change the math (ids, labels, dtype...), kept for saving."""

    @classmethod
    def from_hf(cls, hf: Mapping) -> "ModelConfig":
        hf = {cls.RENAMES.get(k, k): v for k, v in hf.items()}
        for key, (ok, what) in cls.CHECKS.items():
            if key in hf and not ok(hf[key]):
                raise UnsupportedConfigError(
                    f"{cls.MODEL_TYPE} config has {key}={hf[key]!r}, which zoohub does not implement "
                    f"(supported: {what}); it changes the model's outputs, so it is not ignored"
                )
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in hf.items() if k in names}
        extra = {k: v for k, v in hf.items() if k not in names}
        try:
            return cls(**known, extra=extra)
        except TypeError as e:
            raise UnsupportedConfigError(f"{cls.MODEL_TYPE} config is incomplete: {e}") from None

    def to_hf(self) -> dict:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"})
        out["model_type"] = self.MODEL_TYPE
        return out

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class Head:
    """A task head with transformers' names, outside the backbone prefix.

    >>> from zoohub.backbones import get_family
    >>> get_family("bert").heads["masked_lm"].tied
    {'cls.predictions.decoder.weight': 'embeddings.word_embeddings.weight'}
    """

    task: str
    """Our task name: text_classifier, masked_lm, causal_lm, image_classifier."""
    architecture: str
    """transformers class name saved in config.json `architectures`."""
    shapes: Callable[..., dict[str, tuple]]
    """(config, num_labels) -> {head tensor name: shape}."""
    apply: Callable[..., Any]
    """(params, config, hidden, inputs) -> logits; params is the whole task tree."""
    tied: Mapping[str, str] = field(default_factory=dict)
    """head tensor -> backbone tensor it equals when the file leaves it out (tied embeddings)."""
    backbone_extras: tuple[str, ...] = ()
    """optional backbone tensors this head needs (BERT's pooler)."""
    ignored: tuple[str, ...] = ()
    """regexes of stored head tensors that are aliases or buffers (never loaded)."""


@dataclass(frozen=True, kw_only=True)
class Family:
    """One model family: how to read its config, shape its weights and run its backbone.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("distilbert")
    >>> family.prefix, family.base_architecture, sorted(family.heads)
    ('distilbert', 'DistilBertModel', ['masked_lm', 'text_classifier'])
    """

    model_type: str
    config_class: type[ModelConfig]
    prefix: str
    """Name the backbone is nested under in task checkpoints (`bert`, `model`, `transformer`)."""
    base_architecture: str
    """transformers class of the bare backbone (`BertModel`)."""
    forward: Callable[..., Any]
    """(backbone params, config, inputs dict, *, rng=None) -> hidden states [B, T, D]."""
    shapes: Callable[[Any], dict[str, tuple]]
    """config -> {backbone tensor name: shape}, required tensors."""
    optional_shapes: Callable[[Any], dict[str, tuple]] = lambda config: {}
    """config -> tensors a checkpoint may or may not have (BERT's pooler)."""
    ignored: tuple[str, ...] = (r"(^|\.)position_ids$", r"(^|\.)masked_bias$", r"\.attn\.bias$")
    """regexes of stored buffers that are not parameters."""
    heads: Mapping[str, Head] = field(default_factory=dict)
    """task name -> head."""
    max_length: Callable[[Any], int | None] = lambda config: getattr(config, "max_position_embeddings", None)
    """config -> longest sequence the position table allows (None: no limit)."""
    input_kind: str = "text"
    """"text" or "image": what `Backbone.predict` accepts."""
    token_types: bool = False
    """The tokenizer's segment ids feed the model (`token_type_ids`, BERT's sentence A/B embeddings)."""

    def is_ignored(self, name: str, head: Head | None = None) -> bool:
        patterns = self.ignored + (head.ignored if head else ())
        return any(re.search(p, name) for p in patterns)


def init_tensor(name: str, shape: tuple, *, std: float, rng: np.random.Generator) -> np.ndarray:
    """transformers' default init by tensor role: norms 1, biases 0, the rest N(0, std)."""
    lowered = name.lower()
    if name.endswith("bias"):
        return np.zeros(shape, np.float32)
    if "norm" in lowered and name.endswith("weight"):
        return np.ones(shape, np.float32)
    return rng.normal(0.0, std, size=shape).astype(np.float32)
