"""Layouts of the classic decoder families that their one recipe does not cover, against transformers:
Falcon's new decoder architecture (kv groups, one or two norms), ALiBi Falcon (Falcon-RW), Falcon's
sequential block, post-norm OPT (OPT-350m) and GPT-BigCode without multi-query. Each: left-padded
logits on both backends, greedy tokens through the jax KV cache, and the saved checkpoint in
transformers."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import zoohub
from zoohub.backbones import get_family

from tests.tiny import build

from .conftest import (assert_greedy_matches, assert_saved_loads_in_transformers, left_padded_batch,
                       torch_logits, transformers)


def _variant(model_type: str, **changes):
    recipe = get_family(model_type).recipe
    return dataclasses.replace(recipe, kwargs={**recipe.kwargs, **changes})


VARIANTS = {
    # Falcon-40B's layout: 6 query heads in 2 kv groups, ln_attn + ln_mlp, biases
    "falcon-new-decoder": _variant("falcon", new_decoder_architecture=True, num_attention_heads=6, num_kv_heads=2,
                                   bias=True),
    # Falcon2-11B's: the new layout with one norm for both branches
    "falcon-new-decoder-one-norm": _variant("falcon", new_decoder_architecture=True, num_attention_heads=6,
                                            num_kv_heads=3, num_ln_in_parallel_attn=1),
    # Falcon-RW: ALiBi, per-head q/k/v, sequential block, biases. 12 heads: slopes of a head count that
    # is no power of two, and some that are not powers of two themselves, so bfloat16 rounds them
    "falcon-alibi": _variant("falcon", alibi=True, multi_query=False, parallel_attn=False, bias=True,
                             num_attention_heads=12),
    # the sequential block with multi-query attention and RoPE
    "falcon-sequential": _variant("falcon", parallel_attn=False, bias=True),
    # OPT-350m's layout: post-norm blocks (no final norm) and 40-wide embeddings in a 48-wide model
    "opt-post-norm": _variant("opt", do_layer_norm_before=False),
    "gpt_bigcode-multi-head": _variant("gpt_bigcode", multi_query=False),
}


@pytest.fixture(scope="module")
def variant(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    build(name.split("-")[0], "causal_lm", folder, recipe=VARIANTS[name])
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").float().eval()
    return name, folder, model



@pytest.mark.parametrize("variant", list(VARIANTS), indirect=True)
def test_variant_matches_transformers(variant, tmp_path):
    name, folder, model = variant
    ids, mask, pos = left_padded_batch()
    ref = torch_logits(model, ids, mask, pos)
    for backend in ("numpy", "jax"):
        zoohub.set_backend(backend)
        lm = zoohub.CausalLM.from_preset(folder)
        ours = lm.logits({"input_ids": ids, "attention_mask": mask})
        assert np.abs(ours - ref)[mask == 1].max() <= 1e-4, (name, backend)

    assert_greedy_matches(lm, model)  # jax (the last backend): through the KV cache
    assert_saved_loads_in_transformers(lm, model, tmp_path / "saved")


@pytest.mark.parametrize("model_type,key,value,match", [
    ("opt", "layerdrop", 0.1, "layerdrop=0.1"),
    ("opt", "layer_norm_elementwise_affine", False, "layer_norm_elementwise_affine=False"),
    ("falcon", "num_ln_in_parallel_attn", 2, "needs new_decoder_architecture"),
    ("falcon", "rope_parameters", {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}, "rope_parameters="),
    ("bloom", "num_attention_heads", 4, "n_head=3 and its alias num_attention_heads=4 disagree"),
    ("gpt_bigcode", "add_cross_attention", True, "add_cross_attention=True"),
])
def test_config_values_zoohub_does_not_compute_are_refused_by_name(model_type, key, value, match):
    from zoohub.errors import UnsupportedConfigError

    family = get_family(model_type)
    kwargs = dict(family.recipe.kwargs)
    family.config_class.from_hf(kwargs)
    with pytest.raises(UnsupportedConfigError, match=match):
        family.config_class.from_hf({**kwargs, key: value})
