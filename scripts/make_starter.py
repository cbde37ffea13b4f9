"""Make the starter preset and the sentiment dataset that ship inside the package (zoohub/data/).

The starter is a *randomly initialised* tiny BERT (2 layers, width 64) with a WordPiece tokenizer
trained on the dataset's own text: small enough to commit (about 450 KB) and to fine-tune in seconds,
so `zoohub demo` runs offline. It is a toy, not a pretrained language model, and says so in its card:
fine-tuned on the bundled sentences it learns which of their words are positive or negative, no more.

    python scripts/make_starter.py        # rewrites zoohub/data/starter-bert-tiny and zoohub/data/sentiment
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np

from zoohub.demo import EXAMPLES

DATA = Path(__file__).resolve().parents[1] / "zoohub" / "data"

# Sentences are made from templates in which only the sentiment words differ between the labels: every
# template is filled for both labels with the same nouns, so word order, length and punctuation carry no
# signal and the model has to learn which words are positive and which negative.
NOUNS = ["film", "movie", "show", "series", "story", "plot", "cast", "acting", "script", "soundtrack", "ending",
         "dialogue", "sequel", "direction", "music", "episode", "performance", "documentary", "comedy", "drama",
         "thriller", "book", "novel", "album", "game", "play", "concert", "finale"]
WORDS = {  # label -> slot -> words
    "positive": {
        "a": ["great", "good", "wonderful", "brilliant", "delightful", "charming", "superb", "moving", "excellent",
              "enjoyable", "fantastic", "beautiful", "clever", "gripping", "funny", "lovely", "amazing", "perfect",
              "touching", "outstanding", "terrific", "memorable", "fun", "nice"],
        "v": ["loved", "enjoyed", "adored", "liked", "admired", "treasured"],
        "vp": ["love", "enjoy", "adore", "like", "recommend", "admire"],
        "np": ["a masterpiece", "a joy", "a delight", "a treat", "a triumph", "a gem", "a pleasure"],
    },
    "negative": {
        "a": ["awful", "terrible", "bad", "boring", "dull", "dreadful", "painful", "weak", "clumsy", "tedious",
              "disappointing", "messy", "forgettable", "lifeless", "bland", "horrible", "poor", "stupid", "annoying",
              "pointless", "mediocre", "predictable", "ugly", "lousy"],
        "v": ["hated", "disliked", "loathed", "regretted", "despised", "resented"],
        "vp": ["hate", "dislike", "loathe", "regret", "despise", "resent"],
        "np": ["a mess", "a disaster", "a waste of time", "a letdown", "a chore", "a failure", "a bore"],
    },
}
TEMPLATES = [
    "{a} {n}", "{a} {n}.", "{art} {a} {n}.", "what {art} {a} {n}!", "such {art} {a} {n}.", "this was {art} {a} {n}.",
    "the {n} was {a}.", "the {n} is {a}.", "this {n} is {a}.", "i thought the {n} was {a}.", "it was {a}.",
    "the {n} is {a} from start to finish.", "honestly, the {n} felt {a}.", "the {n} was so {a}.", "{a}.",
    "really {a}.", "overall, {a}.", "my friends found the {n} {a}.", "everyone said the {n} was {a}, and it was.",
    "the {n}? simply {a}.", "{art} {a} evening: the {n} says it all.", "the {n} and the {n2} were {a}.",
    "{a} {n}, {a2} {n2}.", "{a}, {a2} and {a3}.", "{art} {a} {n} with {art2} {a2} {n2}.",
    "i {v} it.", "i {v} it", "i {v} the {n}.", "i {v} this {n}.", "we {v} every minute of the {n}.",
    "everyone {v} this {n}.", "i really {v} the {n}.", "my kids {v} it.", "honestly, i {v} the {n}.",
    "i {v} it, the {n} was {a}.", "i {vp} this {n}.", "i {vp} it.", "i {vp} the {n} so much.", "we {vp} it.",
    "the {n} is {np}.", "it was {np}.", "{np}.", "what {np}!", "this {n} is {np}.", "the {n} was {np}, really.",
]
# The sentences README.md and `zoohub demo` show stay out of the data (with or without a final "." or "!"):
# the demo shows that the model classifies sentences it has not seen.
HELD_OUT = {text.rstrip(".!") for text in EXAMPLES}
PER_TEMPLATE = 12  # sentences per template and label, before removing duplicates


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def fill(template: str, words: dict, rng: random.Random) -> str:
    a, a2, a3 = rng.sample(words["a"], 3)
    n, n2 = rng.sample(NOUNS, 2)
    return template.format(a=a, a2=a2, a3=a3, n=n, n2=n2, art=article(a), art2=article(a2),
                           v=rng.choice(words["v"]), vp=rng.choice(words["vp"]), np=rng.choice(words["np"]))


def make_dataset(rng: random.Random) -> tuple[list, list]:
    """(train, test) rows of (text, label id); the test rows are other fillings of the same templates."""
    rows = {}
    for template in TEMPLATES:
        for label, name in enumerate(("negative", "positive")):
            for _ in range(PER_TEMPLATE):
                text = fill(template, WORDS[name], rng)
                if text.rstrip(".!") not in HELD_OUT:
                    rows.setdefault(text, label)
    rows = sorted(rows.items())
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
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials))
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

A **toy model**: a randomly initialised tiny BERT (2 layers, hidden size 64, 4 heads, ~{params:,} parameters)
with a WordPiece tokenizer trained on zoohub's bundled sentiment sentences. It is *not* a pretrained language
model: it exists so that `zoohub demo` can load, evaluate, fine-tune and upload a model with no network.
Its classification head is untrained; fine-tune it before use (`zoohub finetune`). Fine-tuned on the bundled
sentences, it learns which of their words are positive or negative; it knows no other English.

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

    num_params: list[int] = []

    def fill(tmp: Path) -> None:
        vocab = make_tokenizer([t for t, _ in train + test], tmp)
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
        num_params.append(sum(int(np.prod(s)) for s in shapes.values()))
        (tmp / "README.md").write_text(CARD.format(params=num_params[0]))

    out = save_preset_folder(DATA / "starter-bert-tiny", fill, metadata={
        "preset_name": "starter_bert_tiny_en", "task": "text_classifier", "license": "apache-2.0",
        "architecture": "BertForSequenceClassification", "preprocessing": {"sequence_length": 64},
    })
    print(f"wrote {out} ({num_params[0]:,} parameters: the registry row's params) and {DATA / 'sentiment'} "
          f"({len(train)} train / {len(test)} test rows)")


if __name__ == "__main__":
    main()
