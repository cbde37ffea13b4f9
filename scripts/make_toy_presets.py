"""Make the toy presets that ship inside the package (zoohub/data/toy-*), for offline examples and tests.

Each is a *randomly initialised* tiny transformers checkpoint, written by transformers itself
(`save_pretrained`), so it is a real checkpoint that `transformers.AutoModelFor...` loads:

- toy-llama-tiny: `LlamaForCausalLM` (2 layers, width 32, 4 heads / 2 kv heads, tied embeddings) with a
  byte-level BPE tokenizer trained by `tokenizers` on the bundled sentiment sentences, and a chat template.
  Offline default for `CausalLM` examples and `zoohub serve`; it generates random tokens.
- toy-vit-tiny: `ViTForImageClassification` (32x32 images, 8x8 patches, 2 layers, width 32, 3 classes).
- toy-bert-mlm-tiny: `BertForMaskedLM` (2 layers, width 32) with the starter's WordPiece tokenizer.

They are toys, not pretrained models, and their model cards say so. Each is about 100-150 KB.
The same script run again writes the same bytes (fixed seeds and a fixed `saved_at`), given the same
transformers version (which config.json records).

    python scripts/make_toy_presets.py        # rewrites zoohub/data/toy-*
"""
from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "zoohub" / "data"
SAVED_AT = "2026-12-04T00:00:00+00:00"  # fixed, so a rerun reproduces zoohub.json byte for byte
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] | trim }}{{ eos_token }}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")

CARD = """---
library_name: zoohub
pipeline_tag: {pipeline}
license: apache-2.0
tags: [zoohub, {family}, toy, random-init]
---
# {folder}

A **toy model**: a randomly initialised tiny `{architecture}` ({shape}, {params:,} parameters){extra}.
It is *not* a pretrained model and its outputs mean nothing: it exists so that zoohub's examples, tests
and offline defaults can load, run, fine-tune and save a real transformers checkpoint with no network.

Made by `scripts/make_toy_presets.py` in the zoohub repository.
"""


def sentences() -> list[str]:
    with open(DATA / "sentiment" / "train.csv", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def llama(tmp: Path) -> dict:
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    # Byte-level BPE: any text encodes (no unknown tokens), as for a real Llama-3-style tokenizer.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sentences(), trainer)
    # BOS comes from the post-processor, so zoohub and transformers add it the same way (once).
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                                model_max_length=256)
    fast.chat_template = CHAT_TEMPLATE
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = _random(transformers.LlamaForCausalLM, config)
    model.save_pretrained(tmp)
    fast.save_pretrained(tmp)
    (tmp / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}, indent=2) + "\n")
    return dict(model=model, pipeline="text-generation", family="llama",
                architecture="LlamaForCausalLM", shape="2 layers, width 32, 4 heads / 2 kv heads",
                extra=(" with a byte-level BPE tokenizer (384 tokens) trained on zoohub's bundled sentiment "
                       "sentences and a minimal chat template"))


def vit(tmp: Path) -> dict:
    import transformers

    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=3)
    model = _random(transformers.ViTForImageClassification, config)
    model.save_pretrained(tmp)
    transformers.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp)
    return dict(model=model, pipeline="image-classification", family="vit",
                architecture="ViTForImageClassification", shape="32x32 images, 8x8 patches, 2 layers, width 32",
                extra=", with a random 3-class head (LABEL_0, LABEL_1, LABEL_2)")


def bert_mlm(tmp: Path) -> dict:
    import transformers

    starter = DATA / "starter-bert-tiny"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(starter / name, tmp / name)
    vocab = json.loads((starter / "config.json").read_text())["vocab_size"]
    config = transformers.BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, type_vocab_size=2, pad_token_id=0)
    model = _random(transformers.BertForMaskedLM, config)
    model.save_pretrained(tmp)
    return dict(model=model, pipeline="fill-mask", family="bert",
                architecture="BertForMaskedLM", shape="2 layers, width 32, 4 heads",
                extra=" with the WordPiece tokenizer of the starter preset (starter-bert-tiny)")


def _random(cls, config):
    import torch

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(config).float().eval()


TOYS = {  # folder under zoohub/data -> zoohub.json metadata (besides the manifest) and the builder
    "toy-llama-tiny": (dict(preset_name="toy_llama", task="causal_lm", architecture="LlamaForCausalLM"), llama),
    "toy-vit-tiny": (dict(preset_name="toy_vit", task="image_classifier", architecture="ViTForImageClassification",
                          preprocessing={"image_size": [32, 32]}), vit),
    "toy-bert-mlm-tiny": (dict(preset_name="toy_bert_mlm", task="masked_lm", architecture="BertForMaskedLM",
                               preprocessing={"sequence_length": 64}), bert_mlm),
}


def main() -> None:
    from zoohub.presets.folder import save_preset_folder

    for folder, (metadata, build) in TOYS.items():
        made: dict = {}

        def fill(tmp: Path) -> None:
            made.update(build(tmp))
            # Tied weights are one tensor: each parameter counted once, as real presets' model cards count them.
            made["params"] = sum(p.numel() for p in made["model"].parameters())
            (tmp / "README.md").write_text(CARD.format(folder=folder, **made))

        out = save_preset_folder(DATA / folder, fill, metadata={
            **metadata, "license": "apache-2.0", "saved_at": SAVED_AT})
        size = sum(p.stat().st_size for p in out.iterdir())
        print(f"wrote {out}: {made['architecture']}, {made['params']:,} parameters (the registry row's params), "
              f"{size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
