"""Model families, looked up by transformers `model_type` through a table (never by importing
anything a config names).

    >>> from zoohub.backbones import get_family
    >>> get_family("bert").base_architecture
    'BertModel'
"""
from __future__ import annotations

import importlib
import importlib.util

from zoohub.backbones.base import Family, Head, ModelConfig
from zoohub.errors import UnsupportedArchitectureError, close_matches

# model_type -> module defining it. A module exposes FAMILIES: {model_type: Family}.
FAMILY_MODULES: dict[str, str] = {
    "bert": "zoohub.backbones.bert",
    "roberta": "zoohub.backbones.bert",
    "xlm-roberta": "zoohub.backbones.bert",
    "distilbert": "zoohub.backbones.distilbert",
    "deberta-v2": "zoohub.backbones.deberta_v2",
    "modernbert": "zoohub.backbones.modernbert",
    "mpnet": "zoohub.backbones.mpnet",
    "albert": "zoohub.backbones.albert",
    "electra": "zoohub.backbones.electra",
    "gpt2": "zoohub.backbones.gpt2",
    "llama": "zoohub.backbones.llama",
    "mistral": "zoohub.backbones.llama",
    "qwen2": "zoohub.backbones.llama",
    "qwen3": "zoohub.backbones.llama",
    "gemma": "zoohub.backbones.gemma",
    "gemma2": "zoohub.backbones.gemma",
    "gemma3_text": "zoohub.backbones.gemma",
    "phi": "zoohub.backbones.phi",
    "opt": "zoohub.backbones.opt",
    "bloom": "zoohub.backbones.bloom",
    "falcon": "zoohub.backbones.falcon",
    "gpt_bigcode": "zoohub.backbones.gpt_bigcode",
    "stablelm": "zoohub.backbones.stablelm",
    "starcoder2": "zoohub.backbones.starcoder2",
    "gpt_neox": "zoohub.backbones.gpt_neox",
    "gptj": "zoohub.backbones.gptj",
    "gpt_neo": "zoohub.backbones.gpt_neo",
    "phi3": "zoohub.backbones.phi3",
    "smollm3": "zoohub.backbones.smollm3",
    "olmo2": "zoohub.backbones.olmo2",
    "granite": "zoohub.backbones.granite",
    "cohere": "zoohub.backbones.cohere",
    "mixtral": "zoohub.backbones.moe_decoders",
    "qwen2_moe": "zoohub.backbones.moe_decoders",
    "qwen3_moe": "zoohub.backbones.moe_decoders",
    "olmoe": "zoohub.backbones.moe_decoders",
    "gpt_oss": "zoohub.backbones.gpt_oss",
    "deepseek_v3": "zoohub.backbones.deepseek_v3",
    "vit": "zoohub.backbones.vit",
    "bart": "zoohub.backbones.bart",
    "marian": "zoohub.backbones.marian",
    "mbart": "zoohub.backbones.mbart",
    "t5": "zoohub.backbones.t5",
    "mt5": "zoohub.backbones.t5",
}


def supported_model_types() -> list[str]:
    """model_types whose module is present in this install."""
    return sorted(t for t, m in FAMILY_MODULES.items() if importlib.util.find_spec(m) is not None)


def get_family(model_type: str) -> Family:
    """The Family for a config's `model_type`, or an error listing the supported ones."""
    module_name = FAMILY_MODULES.get(model_type)
    if module_name is None or importlib.util.find_spec(module_name) is None:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported;{close_matches(model_type, supported_model_types())}"
            f" supported: {', '.join(supported_model_types())}"
        )
    families = importlib.import_module(module_name).FAMILIES
    if model_type not in families:
        raise UnsupportedArchitectureError(f"model_type {model_type!r} is not defined in {module_name}")
    return families[model_type]


def find_architecture(architecture: str) -> tuple[Family, Head | None]:
    """Family and head for a transformers class name such as 'BertForSequenceClassification'."""
    for model_type in supported_model_types():
        family = get_family(model_type)
        if family.base_architecture == architecture:
            return family, None
        for head in family.heads.values():
            if head.architecture == architecture:
                return family, head
    raise UnsupportedArchitectureError(f"architecture {architecture!r} is not supported")


__all__ = ["Family", "Head", "ModelConfig", "FAMILY_MODULES", "get_family", "find_architecture",
           "supported_model_types"]
