"""What a model family declares: everything zoohub knows about it, in one `Family` value.

A family module writes its config class (which transformers keys it handles, which it knowingly
ignores), its backbone forward and tensor shapes, its task heads, where its token embeddings and
layer list live, its LoRA and tensor-parallel defaults and its tiny test checkpoint. Tasks,
generation, LoRA and sharding ask the family; they never test a `model_type` string.

Families register in `zoohub.backbones.FAMILY_MODULES` (model_type -> module); each module
exposes `FAMILIES` ({model_type: Family}).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_args, get_type_hints

import numpy as np

from zoohub.errors import UnsupportedConfigError
from zoohub.layers import get_path

# Keys transformers writes into (or accepts from) any config.json that never change a forward pass:
# bookkeeping, token ids, labels, output switches and the generation settings that 4.x configs carried.
METADATA_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "_name_or_path",
    "id2label", "label2id", "num_labels", "problem_type", "finetuning_task", "tokenizer_class", "prefix",
    "task_specific_params", "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "cls_token_id",
    "mask_token_id", "unk_token_id", "decoder_start_token_id", "forced_bos_token_id", "forced_eos_token_id",
    "use_cache", "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
    "gradient_checkpointing", "chunk_size_feed_forward", "tf_legacy_loss", "_attn_implementation_autoset",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "remove_invalid_values", "exponential_decay_length_penalty",
    "suppress_tokens", "begin_suppress_tokens", "output_past", "cache_implementation",
    # read by other libraries than transformers: transformers.js and sentence-transformers' cross-encoders
    "transformers.js_config", "sentence_transformers", "sbert_ce_default_activation_function",
})

Check = tuple[Callable[[Any], bool], str]
"""(predicate on a config value meaning "zoohub computes what transformers computes", what passes)."""

_NO = (lambda v: not v, "false or absent")
# Keys every config may carry that change the model; zoohub implements none of them.
BASE_CHECKS: dict[str, Check] = {
    "pruned_heads": (lambda v: not v, "{} (no pruned attention heads)"),
    "is_encoder_decoder": _NO, "add_cross_attention": _NO, "tie_encoder_decoder": _NO,
    "cross_attention_hidden_size": (lambda v: v is None, "null"),
}


def _passes(ok: Callable[[Any], bool], value) -> bool:
    """A check's verdict on a value of any JSON type; a check that cannot read the value says no."""
    try:
        return bool(ok(value))
    except (TypeError, ValueError, AttributeError, LookupError, ArithmeticError):
        return False


@functools.cache
def _field_types(cls) -> dict[str, tuple]:
    """{field: the types its annotation allows} (`int | None` -> (int, NoneType)); only plain classes."""
    hints = get_type_hints(cls)
    out = {}
    for name in cls.handled_keys():
        kinds = get_args(hints[name]) or (hints[name],)
        if all(isinstance(k, type) for k in kinds):
            out[name] = kinds
    return out


def _type_ok(value, kinds: tuple) -> bool:
    """Whether a config.json value fits a field's types: an int passes for a float, a bool only for a bool."""
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds + ((int,) if float in kinds else ()))


def _unset(value) -> bool:
    """A value an unknown key may have without meaning anything: null, false or empty."""
    return value is None or value is False or (isinstance(value, (str, list, dict)) and not value)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Base of family configs. Field names are transformers' config keys, so each hyperparameter is
    written once and `from_hf` / `to_hf` are generic.

    Reading is strict: a key is a field (handled), a metadata key (kept for saving), a checked key
    (accepted only at values that do not change the math), or, with any other non-null value, an
    error that names it. Saving writes back every key that was read.

    >>> from zoohub.backbones import get_family
    >>> config_class = get_family("bert").config_class
    >>> config = config_class.from_hf({"vocab_size": 97, "hidden_size": 48, "num_hidden_layers": 2,
    ...     "num_attention_heads": 3, "intermediate_size": 80, "_name_or_path": "x"})
    >>> config.to_hf()["_name_or_path"]  # metadata passes through to the saved config.json
    'x'
    >>> config_class.from_hf({**config.to_hf(), "relative_attention": True})
    Traceback (most recent call last):
    ...
    zoohub.errors.UnsupportedConfigError: bert config has relative_attention=True, a key zoohub does not know; it may change the model's outputs, so it is not ignored (handled keys: ...)
    """

    MODEL_TYPE: ClassVar[str] = ""
    CHECKS: ClassVar[dict[str, Check]] = {}
    """Keys this family reads only at values it implements; merged over the class hierarchy."""
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    """Family keys that do not change the math (transformers ignores them too); merged over the hierarchy."""

    tie_word_embeddings: bool = True  # transformers' default: heads listed in `Head.tied` reuse the embeddings

    extra: dict = field(default_factory=dict, compare=False, repr=False)
    """Metadata and accepted checked keys, kept for saving."""
    read: frozenset = field(default=frozenset(), compare=False, repr=False)
    """The keys config.json had: saving writes each back, even a null (others only when set)."""

    @classmethod
    def checks(cls) -> dict[str, Check]:
        """CHECKS over the class hierarchy; a subclass that makes a checked key a field implements it."""
        fields, out = set(cls.handled_keys()), dict(BASE_CHECKS)
        for klass in reversed(cls.__mro__):
            declared = {f.name for f in dataclasses.fields(klass)} if dataclasses.is_dataclass(klass) else set()
            for key, check in vars(klass).get("CHECKS", {}).items():
                out[key] = check
            for key in [k for k in out if k in fields and k not in declared]:
                del out[key]
        return out

    @classmethod
    def ignored_keys(cls) -> frozenset[str]:
        return METADATA_KEYS.union(*(vars(k).get("IGNORED", ()) for k in cls.__mro__))

    @classmethod
    def handled_keys(cls) -> list[str]:
        return sorted(f.name for f in dataclasses.fields(cls) if f.name not in ("extra", "read"))

    @classmethod
    def from_hf(cls, hf: Mapping) -> "ModelConfig":
        fields, checks, ignored = set(cls.handled_keys()), cls.checks(), cls.ignored_keys()
        known, extra = {}, {}
        for key, value in hf.items():
            if key in checks:  # fields too: e.g. rope_parameters of a type not implemented
                ok, what = checks[key]
                if not _passes(ok, value):
                    raise UnsupportedConfigError(
                        f"{cls.MODEL_TYPE} config has {key}={value!r}, which zoohub does not implement "
                        f"(supported: {what}); it changes the model's outputs, so it is not ignored")
            if key in fields:
                kinds = _field_types(cls).get(key)
                if kinds is not None and not _type_ok(value, kinds):
                    expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                    raise UnsupportedConfigError(
                        f"{cls.MODEL_TYPE} config has {key}={value!r:.100}, expected {expected}; fix config.json")
                known[key] = value
                continue
            if key not in checks and key not in ignored and not _unset(value):
                raise UnsupportedConfigError(
                    f"{cls.MODEL_TYPE} config has {key}={value!r}, a key zoohub does not know; it may change "
                    f"the model's outputs, so it is not ignored (handled keys: {', '.join(sorted(fields))})")
            extra[key] = value
        try:
            return cls(**known, extra=extra, read=frozenset(hf))
        except TypeError as e:
            raise UnsupportedConfigError(f"{cls.MODEL_TYPE} config is incomplete: {e}") from None
        except (ValueError, ArithmeticError) as e:  # the invariants of __post_init__
            raise UnsupportedConfigError(f"{cls.MODEL_TYPE} config is invalid: {e}; fix config.json") from None

    def to_hf(self) -> dict:
        out = dict(self.extra)
        # A null the file did not have is left out: transformers derives it (head_dim, rope_theta...).
        out.update({name: getattr(self, name) for name in self.handled_keys()
                    if getattr(self, name) is not None or name in self.read})
        out["model_type"] = self.MODEL_TYPE
        return out

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class Head:
    """A task head with transformers' names, outside the backbone prefix.

    >>> from zoohub.backbones import get_family
    >>> head = get_family("bert").heads["masked_lm"]
    >>> head.architecture, head.tied
    ('BertForMaskedLM', ('cls.predictions.decoder.weight',))
    """

    task: str
    """Our task name: text_classifier, masked_lm, causal_lm, image_classifier."""
    architecture: str
    """transformers class name saved in config.json `architectures`."""
    shapes: Callable[..., dict[str, tuple]]
    """(config, num_labels) -> {head tensor name: shape}."""
    apply: Callable[..., Any]
    """(params, config, hidden, inputs, *, rng) -> logits; params is the whole task tree, tied tensors filled in."""
    tied: tuple[str, ...] = ()
    """Head tensors that are the token embedding table when `config.tie_word_embeddings` (and the file leaves them out)."""
    backbone_extras: tuple[str, ...] = ()
    """Optional backbone tensors this head needs (BERT's pooler)."""
    trained_with_lora: tuple[str, ...] = ()
    """Head modules that train beside LoRA adapters and are saved with them (PEFT's `modules_to_save`,
    matched by name suffix): a new classifier must learn, a language-model head need not."""
    ignored: tuple[str, ...] = ()
    """Regexes of stored head tensors that are aliases or buffers (never loaded)."""
    tied_unless_stored: bool = False
    """`tied` tensors that the file does store are loaded and kept untied, whatever the config says
    (transformers 5 writes `tie_word_embeddings=true` for every T5 and unties a stored, different `lm_head`)."""
    zeros_if_missing: tuple[str, ...] = ()
    """Head buffers a file may lack, then zeros as transformers makes them (BART's `final_logits_bias` in
    files saved from `BartModel`); reported in `LoadReport.new_tensors`."""
    tie_to: str = ""
    """Set by `Family`: the embedding tensor (a task-params path) that `tied` tensors fall back to."""

    def __call__(self, params: Mapping, config, hidden, inputs=None, *, rng=None):
        """The head's outputs, with tied tensors the file left out read from the embeddings."""
        for name in self.tied:
            if get_path(params, name) is None:
                params = set_path(params, name, get_path(params, self.tie_to))
        return self.apply(params, config, hidden, inputs, rng=rng)


def set_path(tree: Mapping, path: str, value) -> dict:
    """A copy of `tree` with `value` at dotted `path` (the dicts on the way are copied, leaves shared)."""
    head, _, rest = path.partition(".")
    if not rest:
        return {**tree, head: value}
    return {**tree, head: set_path(tree.get(head, {}), rest, value)}


@dataclass(frozen=True, kw_only=True)
class TinyRecipe:
    """A tiny random checkpoint of the family, made by transformers in the test suite: parity,
    generation, save round-trip, LoRA and sharding tests are generated from it.

    Sizes are small, odd and distinct (vocab 97, width 48, 3 heads / 1 kv head, MLP 80) and the
    init range large, so a wrong transpose, head split or constant changes the outputs visibly.
    """

    config: str
    """transformers config class name (`"LlamaConfig"`)."""
    kwargs: Mapping[str, Any]
    seed: int
    tokenizer: str = "bpe"
    """Which test tokenizer goes with it: "bpe" (Metaspace BPE), "wordpiece", "byte_bpe", or "image"."""


Spec = tuple[str | None, ...]
"""A PartitionSpec written as a tuple of mesh axis names (no jax import in family modules)."""


@dataclass(frozen=True, kw_only=True)
class Family:
    """One model family: how to read its config, shape and run its weights, and adapt or shard them.

    >>> from zoohub.backbones import get_family
    >>> family = get_family("llama")
    >>> family.prefix, family.embeddings, family.layers, family.lora_targets
    ('model', 'embed_tokens', 'layers', ('q_proj', 'v_proj'))
    """

    model_type: str
    config_class: type[ModelConfig]
    prefix: str
    """Name the backbone is nested under in task checkpoints (`bert`, `model`, `transformer`); "" for a
    family whose task checkpoints keep the backbone at the top (T5: `shared.weight`, `lm_head.weight`)."""
    base_architecture: str
    """transformers class of the bare backbone (`BertModel`)."""
    forward: Callable[..., Any]
    """(backbone params, config, inputs, *, rng=None) -> hidden states [B, T, D]; decoders also take
    `cache=` (a `KVCache`) and then return (hidden, cache)."""
    shapes: Callable[[Any], dict[str, tuple]]
    """config -> {backbone tensor name: shape}, required tensors, in the checkpoint's per-layer names."""
    embeddings: str | None = None
    """Path (under the prefix) of the token embedding table's params: `embed_tokens`, `wte` (None: no tokens)."""
    optional_shapes: Callable[[Any], dict[str, tuple]] = lambda config: {}
    """config -> tensors a checkpoint may or may not have (BERT's pooler)."""
    ignored: tuple[str, ...] = (r"(^|\.)position_ids$",)
    """Regexes of stored buffers that are not parameters."""
    ignored_by_config: Callable[[Any], tuple[str, ...]] = lambda config: ()
    """config -> more regexes of stored tensors never loaded under that config (Marian's aliases of
    `shared`, which only a separate-vocabulary model reads as its own tables)."""
    heads: Mapping[str, Head] = field(default_factory=dict)
    """task name -> head."""
    layers: str | None = None
    """Path (under the prefix) of the layer list held stacked on a leading layer axis (decoders: one
    `lax.scan` on jax for every call). None: layers are held per layer, as the checkpoint names them."""
    experts: str | None = None
    """Path inside each layer of a mixture-of-experts expert list (`mlp.experts`), held stacked on a
    leading expert axis for the grouped expert matmul (`zoohub.layers.moe`): the checkpoint's
    `layers.{i}.mlp.experts.{e}.gate_proj.weight` [F, D] are held as `layers.mlp.experts.gate_proj.weight`
    [L, E, F, D]; saving writes them back per expert. None: no experts."""
    trailing_layers: str | None = None
    """Regex of stacked layer tensors that only the last layers have (DeepSeek-V3's MoE blocks, after
    `first_k_dense_replace` dense layers): held as [L - k, ...] and saved back as layers k..L-1, while
    tensors every layer has are [L, ...] and those of the first layers only [k, ...]. None: every
    stacked tensor starts at layer 0."""
    aux_loss: Callable[..., Any] | None = None
    """(config, aux, inputs) -> (auxiliary loss, its weight in the training loss) for a family whose
    forward takes `aux=` (a dict it fills, e.g. with MoE router logits); `fit` adds weight * loss to
    the objective and reports the loss as `aux_loss`. None: no auxiliary loss."""
    max_length: Callable[[Any], int | None] = lambda config: getattr(config, "max_position_embeddings", None)
    """config -> longest sequence the positions allow (None: no limit)."""
    learned_positions: bool = False
    """Positions come from a learned table, so `max_length` is a hard limit (past it there are no rows)."""
    input_kind: str = "text"
    """"text" or "image": what `Backbone.predict` accepts."""
    token_types: bool = False
    """The tokenizer's segment ids feed the model (`token_type_ids`, BERT's sentence A/B embeddings)."""
    weight_layout: str = "out_in"
    """Linear weights as torch stores them, [out, in]; "in_out" for GPT-2's Conv1D (PEFT's fan_in_fan_out)."""
    lora_targets: tuple[str, ...] = ()
    """Default LoRA target modules (PEFT's `target_modules`): usually the attention query and value."""
    peft_names: tuple[tuple[str, str], ...] = ()
    """(file-name pattern, run-time name) rewrites: transformers 5 renames some modules at run time
    while files keep the old names, and PEFT names adapters by the run-time module."""
    sharding: tuple[tuple[str, Spec], ...] = ()
    """Tensor-parallel rules: (regex over the tensor name, spec); the first match wins, `()` replicates
    on purpose. Specs are for one layer; stacked layers get a leading unsplit axis."""
    recipe: TinyRecipe | None = None
    """The tiny test checkpoint; the test suite fails, naming the family, when it is missing."""
    # ---- encoder-decoder families (T5, BART, Marian); None for the others ------------------------
    # Their `forward` is the teacher-forced pass: inputs {input_ids, attention_mask, decoder_input_ids,
    # decoder_attention_mask?} -> the decoder's hidden states [B, T, D] (what `T5Model` returns).
    encode: Callable[..., Any] | None = None
    """(backbone params, config, inputs {input_ids, attention_mask}, *, rng=None) -> the encoder's
    hidden states [B, S, D] (final norm applied)."""
    cross_cache: Callable[..., Any] | None = None
    """(backbone params, config, encoder hidden [B, S, D], encoder mask [B, S]) -> the decoder's
    cross-attention keys and values of every layer and the mask, computed once per input (a pytree
    the decode step reads, never writes)."""
    decode: Callable[..., Any] | None = None
    """(backbone params, config, inputs {input_ids [B, T], position_ids [B, T]}, cross, *, cache=None,
    rng=None) -> decoder hidden [B, T, D]; with `cache=` (a `KVCache` of the decoder's self-attention,
    written at `cache.index`) returns (hidden, cache)."""

    @property
    def is_encoder_decoder(self) -> bool:
        return self.encode is not None

    def __post_init__(self):
        if self.embeddings is not None:  # heads reach their tied tensors through the family's embeddings
            tie_to = f"{self.root(True)}{self.embeddings}.weight"
            heads = {task: dataclasses.replace(head, tie_to=tie_to) for task, head in self.heads.items()}
            object.__setattr__(self, "heads", heads)

    def is_ignored(self, name: str, head: Head | None = None) -> bool:
        patterns = self.ignored + (head.ignored if head else ())
        return any(re.search(p, name) for p in patterns)

    def root(self, head) -> str:
        """Where the backbone sits in a task's params: under the prefix with a head, at the top without."""
        return f"{self.prefix}." if head is not None and self.prefix else ""

    def backbone_params(self, params: Mapping) -> Mapping:
        """The backbone's params inside a task's params (the whole tree when the prefix is "")."""
        return params[self.prefix] if self.prefix else params

    def embedding_path(self, head: Head | None) -> str:
        return f"{self.root(head)}{self.embeddings}.weight"

    def layers_path(self, head: Head | None) -> str | None:
        return None if self.layers is None else f"{self.root(head)}{self.layers}"


def init_tensor(name: str, shape: tuple, *, std: float, rng: np.random.Generator) -> np.ndarray:
    """transformers' default init by tensor role: norms 1, biases 0, the rest N(0, std)."""
    lowered = name.lower()
    if name.endswith("bias"):
        return np.zeros(shape, np.float32)
    if "norm" in lowered and name.endswith("weight"):
        return np.ones(shape, np.float32)
    return rng.normal(0.0, std, size=shape).astype(np.float32)
