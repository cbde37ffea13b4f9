"""Tiny random checkpoints, made by transformers from each family's `Family.recipe`.

Every test that pairs a family with transformers builds its checkpoint here, so a family added to
`zoohub.backbones.FAMILY_MODULES` is picked up by the parity, generation, save round-trip, LoRA and
sharding tests, and one without a recipe fails them by name.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from zoohub.backbones import FAMILY_MODULES, get_family

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ALL_FAMILIES = sorted(FAMILY_MODULES)
TEXT_TASKS = ("text_classifier", "masked_lm")
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "hello world, how are you?",
             "once upon a time there was a tiny model", "zoohub generates text quickly", "The end.\n\nNew part"]
WORDS = ("the a of and to in is was it for on with as by at an be this that from or are have not but "
         "great film awful good bad movie paris capital france city").split()
ENCODER_TEXTS = ["the great film", "paris is the capital of france and it is a great city", "awful movie"]
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] | trim }}{{ eos_token }}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


def families_with(*tasks: str) -> list[str]:
    """Registered model_types with a head for one of `tasks` (all of them for "backbone")."""
    return [t for t in ALL_FAMILIES if "backbone" in tasks or set(tasks) & set(get_family(t).heads)]


def primary_task(model_type: str) -> str:
    """The head a family is mostly used with: what the LoRA and sharding tests load."""
    heads = get_family(model_type).heads
    return next(t for t in ("causal_lm", "seq2seq_lm", "text_classifier", "image_classifier") if t in heads)


def recipe_of(model_type: str):
    recipe = get_family(model_type).recipe
    if recipe is None:
        pytest.fail(f"family {model_type!r} has no tiny-checkpoint recipe: set Family.recipe in "
                    f"{FAMILY_MODULES[model_type]} (a TinyRecipe with a small transformers config)")
    return recipe


def model_class(model_type: str, task: str):
    family = get_family(model_type)
    name = family.base_architecture if task == "backbone" else family.heads[task].architecture
    return getattr(transformers, name)


# ---- tokenizers and processors ---------------------------------------------------------------------

def _bpe(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=97, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(SENTENCES * 3, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _wordpiece(folder: Path):
    # transformers 5 builds a BertTokenizer from vocab_file=... with an empty vocabulary, so build
    # the WordPiece model with `tokenizers` and hand it over.
    from tokenizers.implementations import BertWordPieceTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    vocab += list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.txt").write_text("\n".join(vocab[:97]) + "\n")
    raw = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True)._tokenizer
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", do_lower_case=True)
    tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return tok


def _byte_bpe(folder: Path):
    from tokenizers import ByteLevelBPETokenizer, processors

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(ENCODER_TEXTS * 20 + [" ".join(WORDS)] * 5, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))  # vocab.json + merges.txt, the older on-disk format
    raw = bpe._tokenizer
    raw.post_processor = processors.RobertaProcessing(("</s>", raw.token_to_id("</s>")), ("<s>", raw.token_to_id("<s>")))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


def _image(folder: Path):
    # A non-default processor: mean/std per channel, so a wrong normalisation shows.
    return transformers.ViTImageProcessorPil(size={"height": 16, "width": 16}, image_mean=[0.45, 0.5, 0.55],
                                             image_std=[0.2, 0.25, 0.3])


def _mpnet_wordpiece(folder: Path):
    # MPNetTokenizer's layout: <s> <pad> </s> first (the model hard-codes padding id 1), <mask> last,
    # WordPiece inside a RoBERTa-style <s> A </s></s> B </s> template.
    vocab = ["<s>", "<pad>", "</s>", "[UNK]"] + WORDS + list("abcdefghijklmnopqrstuvwxyz")
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = list(dict.fromkeys(vocab))[:96] + ["<mask>"]
    return transformers.MPNetTokenizer(vocab={token: i for i, token in enumerate(vocab)})


def _unigram(folder: Path, *, tokenizer_class: str = "AlbertTokenizer",
             specials: tuple[str, ...] = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"), unk_token: str = "<unk>",
             pad_token: str = "<pad>"):
    """A sentencepiece-like Unigram vocabulary (lowercase pieces, "▁" marking a word start) handed to the
    transformers tokenizer class that builds its own pipeline around it: AlbertTokenizer's [CLS] x [SEP]
    template by default. Other families pass their class and special tokens in their own order
    (`functools.partial(_unigram, tokenizer_class="DebertaV2Tokenizer", specials=..., unk_token="[UNK]")`).
    Whole words score above their letters, so known words are one piece and others split into letters."""
    words = [f"\u2581{w}" for w in dict.fromkeys(WORDS)]
    letters = ["\u2581"] + list("abcdefghijklmnopqrstuvwxyz,.?!'")
    # (piece, log probability) rows, specials first with score 0.0 as sentencepiece writes them
    vocab = ([(t, 0.0) for t in specials] + [(w, -2.0 - 0.01 * i) for i, w in enumerate(words)]
             + [(c, -5.0 - 0.01 * i) for i, c in enumerate(letters)])
    return getattr(transformers, tokenizer_class)(
        vocab=vocab, unk_token=unk_token, pad_token=pad_token, cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]")


PREPROCESSORS = {"bpe": _bpe, "wordpiece": _wordpiece, "byte_bpe": _byte_bpe, "image": _image, "unigram": _unigram,
                 "mpnet_wordpiece": _mpnet_wordpiece}


def _cls_byte_bpe(folder: Path):
    """ModernBERT's kind: a byte-level BPE with a BERT-style [CLS] x [SEP] (y [SEP]) template."""
    from tokenizers import ByteLevelBPETokenizer, processors

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(ENCODER_TEXTS * 20 + [" ".join(WORDS)] * 5, vocab_size=300, min_frequency=1,
                            special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    raw = bpe._tokenizer
    cls, sep = ("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep])
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]")
    tok.model_input_names = ["input_ids", "attention_mask"]
    return tok


PREPROCESSORS["cls_byte_bpe"] = _cls_byte_bpe
# DeBERTa-v3's order of specials: [PAD] [CLS] [SEP] [UNK] first ([MASK] is last on the hub)
PREPROCESSORS["deberta_unigram"] = lambda folder: _unigram(
    folder, tokenizer_class="DebertaV2Tokenizer", specials=("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"),
    unk_token="[UNK]", pad_token="[PAD]")


def _unigram_eos(folder: Path):
    """T5's kind: a sentencepiece-like Unigram vocabulary (<pad> </s> <unk> first, no lowercasing) handed to
    T5Tokenizer, whose template appends </s> (`x </s>`); no <extra_id_*> sentinels."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    raw = Tokenizer(models.Unigram())
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=97, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                      show_progress=False)
    raw.train_from_iterator((SENTENCES + ENCODER_TEXTS) * 3 + [" ".join(WORDS)] * 5, trainer)
    vocab = [(piece, float(score)) for piece, score in json.loads(raw.to_str())["model"]["vocab"]]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=0, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


PREPROCESSORS["unigram_eos"] = _unigram_eos


def _spm(folder: Path, *, source_text: list[str] | None = None):
    """Marian's kind: real SentencePiece models trained offline (`source.spm`, `target.spm`, different
    texts so the two cut words differently) and a `vocab.json` over both: </s> 0, <unk> 1, the pieces,
    <pad> last (id 96, as opus-mt puts it at the end), handed to MarianTokenizer."""
    import io
    import json

    import sentencepiece

    def train(texts: list[str], name: str) -> list[str]:
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=60, model_type="unigram",
            hard_vocab_limit=False, minloglevel=2, num_threads=1)
        (folder / name).write_bytes(model.getvalue())
        proc = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
        return [proc.IdToPiece(i) for i in range(proc.GetPieceSize()) if not proc.IsControl(i) and not proc.IsUnknown(i)]

    source = train(source_text or (SENTENCES + ENCODER_TEXTS) * 3 + [" ".join(WORDS)] * 5, "source.spm")
    target = train([s.upper() for s in SENTENCES + ENCODER_TEXTS] * 3 + [" ".join(WORDS[::-1])] * 5, "target.spm")
    pieces = list(dict.fromkeys(p for p in source + target if p not in ("</s>", "<unk>", "<pad>")))[:94]
    vocab = {"</s>": 0, "<unk>": 1, **{p: i + 2 for i, p in enumerate(pieces)}, ">>fr<<": 95, "<pad>": 96}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    return transformers.MarianTokenizer(source_spm=str(folder / "source.spm"), target_spm=str(folder / "target.spm"),
                                        vocab=str(folder / "vocab.json"))


PREPROCESSORS["spm"] = _spm


# ---- checkpoints -----------------------------------------------------------------------------------

def build(model_type: str, task: str, folder: Path, recipe=None):
    """Write the family's tiny checkpoint for `task` ("backbone" or a head) to `folder`; returns the
    transformers model (float32, eval mode) and its tokenizer or image processor. `recipe` replaces
    the family's own (a variant of the family)."""
    recipe = recipe or recipe_of(model_type)
    # transformers' QA heads split their logits in two (start, end): they need num_labels 2
    kwargs = {**recipe.kwargs, "num_labels": 2} if task == "question_answerer" else recipe.kwargs
    config = getattr(transformers, recipe.config)(**kwargs)
    torch.manual_seed(recipe.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_class(model_type, task)(config).float().eval()
    # Norm scales start at 1 (or 0 for Gemma's 1 + w); perturb them so a wrong offset or a skipped norm shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    preprocessor = PREPROCESSORS[recipe.tokenizer](folder)
    preprocessor.save_pretrained(folder)
    if task == "causal_lm":
        ids = {k: recipe.kwargs[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in recipe.kwargs}
        (folder / "generation_config.json").write_text(json.dumps(ids))
    return model, preprocessor


class TinyCheckpoints:
    """Built on first use and kept for the session: {(model_type, task): (folder, torch model, preprocessor)}."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._built: dict = {}

    def __call__(self, model_type: str, task: str):
        key = (model_type, task)
        if key not in self._built:
            folder = self.root / f"{model_type}-{task}"
            self._built[key] = (folder,) + build(model_type, task, folder)
        return self._built[key]

    def __getitem__(self, key: tuple[str, str]):
        return self(*key)

    def folder(self, model_type: str, task: str) -> Path:
        return self(model_type, task)[0]
