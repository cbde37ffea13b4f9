"""Make the starter preset and the sentiment dataset that ship inside the package (zoohub/data/).

The starter is a *randomly initialised* tiny BERT (2 layers, width 64) with a WordPiece tokenizer
trained on the dataset's own text: small enough to commit (< 1 MB) and to fine-tune in seconds,
so `zoohub demo` runs offline. It is not a pretrained language model and says so in its card.

    python scripts/make_starter.py        # rewrites zoohub/data/starter-bert-tiny and zoohub/data/sentiment
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "zoohub" / "data"

SUBJECTS = ["the film", "this movie", "the acting", "the story", "the soundtrack", "the ending", "the script",
            "the cast", "the direction", "the plot", "the dialogue", "the sequel", "the finale", "the camera work"]
POSITIVE = ["great", "wonderful", "brilliant", "delightful", "charming", "superb", "moving", "excellent",
            "enjoyable", "fantastic", "beautiful", "clever", "gripping", "funny"]
NEGATIVE = ["awful", "terrible", "boring", "dull", "dreadful", "painful", "weak", "clumsy", "tedious",
            "disappointing", "messy", "forgettable", "lifeless", "bland"]
TEMPLATES = ["{s} was {a}.", "i thought {s} was {a}.", "{s} is {a} from start to finish.",
             "honestly, {s} felt {a}.", "everyone said {s} was {a}, and it was.", "{s}? simply {a}.",
             "my friends found {s} {a}.", "a {a} evening: {s} says it all."]


def make_dataset(rng: random.Random) -> tuple[list, list]:
    rows = []
    for label, adjectives in ((0, NEGATIVE), (1, POSITIVE)):
        for s in SUBJECTS:
            for a in adjectives:
                rows.append((rng.choice(TEMPLATES).format(s=s, a=a), label))
    rng.shuffle(rows)
    cut = int(len(rows) * 0.8)
    return rows[:cut], rows[cut:]


def write_csv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows((t, ["negative", "positive"][y]) for t, y in rows)


def make_tokenizer(texts: list[str], folder: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64,
        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]",
    }, indent=2) + "\n")
    return tok.get_vocab_size()


CARD = """---
library_name: zoohub
pipeline_tag: text-classification
license: apache-2.0
tags: [zoohub, bert, starter, random-init]
---
# starter-bert-tiny

A **randomly initialised** tiny BERT (2 layers, hidden size 64, 4 heads, ~{params:,} parameters) with a
WordPiece tokenizer trained on zoohub's bundled sentiment sentences. It is *not* a pretrained language
model: it exists so that `zoohub demo` can load, evaluate, fine-tune and upload a model with no network.
Its classification head is untrained; fine-tune it before use (`zoohub finetune`).

Made by `scripts/make_starter.py` in the zoohub repository.
"""


def main() -> None:
    from zoohub.backbones import get_family
    from zoohub.backbones.base import init_tensor
    from zoohub.presets.folder import save_preset_folder
    from zoohub.presets.weights import write_weights

    rng = random.Random(0)
    train, test = make_dataset(rng)
    write_csv(DATA / "sentiment" / "train.csv", train)
    write_csv(DATA / "sentiment" / "test.csv", test)

    def fill(tmp: Path) -> None:
        vocab = make_tokenizer([t for t, _ in train], tmp)
        hf = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": vocab,
              "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
              "max_position_embeddings": 64, "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
              "pad_token_id": 0, "id2label": {"0": "negative", "1": "positive"},
              "label2id": {"negative": 0, "positive": 1}, "dtype": "float32"}
        family = get_family("bert")
        config = family.config_class.from_hf(hf)
        shapes = {f"bert.{k}": s for k, s in {**family.shapes(config), **family.optional_shapes(config)}.items()}
        shapes.update(family.heads["text_classifier"].shapes(config, 2))
        np_rng = np.random.default_rng(0)
        tensors = {k: init_tensor(k, s, std=0.02, rng=np_rng) for k, s in shapes.items()}
        write_weights(tensors, tmp)
        (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(CARD.format(params=sum(int(np.prod(s)) for s in shapes.values())))

    out = save_preset_folder(DATA / "starter-bert-tiny", fill, metadata={
        "preset_name": "starter_bert_tiny_en", "task": "text_classifier",
        "architecture": "BertForSequenceClassification", "preprocessing": {"sequence_length": 64},
    })
    print(f"wrote {out} and {DATA / 'sentiment'} ({len(train)} train / {len(test)} test rows)")


if __name__ == "__main__":
    main()
