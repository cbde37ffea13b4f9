"""Tiny random encoder checkpoints made by transformers in the test session.

Odd, distinct sizes (vocab 97, hidden 48, 3 heads, MLP 80), a large initializer_range, a
non-default layer_norm_eps and a different seed per family, so wrong transposes, head splits
or epsilons cannot pass by accident.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = ("the a of and to in is was it for on with as by at an be this that from or are have not but "
         "great film awful good bad movie paris capital france city").split()
TEXTS = ["the great film", "paris is the capital of france and it is a great city", "awful movie"]
PAIRS = ["good", "the city is not bad", "a"]


def _wordpiece_vocab(path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    vocab += list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    path.write_text("\n".join(vocab[:97]) + "\n")
    return path


def _bert_tokenizer(tmp):
    # transformers 5 builds a BertTokenizer from vocab_file=... with an empty vocabulary, so build
    # the WordPiece model with `tokenizers` and hand it over.
    from tokenizers.implementations import BertWordPieceTokenizer

    raw = BertWordPieceTokenizer(str(_wordpiece_vocab(tmp / "vocab.txt")), lowercase=True)._tokenizer
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
        mask_token="[MASK]", do_lower_case=True)
    tok.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    return tok


def _roberta_tokenizer(tmp):
    from tokenizers import ByteLevelBPETokenizer, processors

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS * 20 + [" ".join(WORDS)] * 5, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp))  # vocab.json + merges.txt, the older on-disk format
    raw = bpe._tokenizer
    raw.post_processor = processors.RobertaProcessing(("</s>", raw.token_to_id("</s>")), ("<s>", raw.token_to_id("<s>")))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")


FAMILIES = {
    # model_type: (config factory, tokenizer factory, seed, {task: transformers class})
    "bert": (lambda: transformers.BertConfig(
        vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
        max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-7, initializer_range=0.5,
        hidden_act="gelu", num_labels=3), _bert_tokenizer, 11,
        {"backbone": "BertModel", "text_classifier": "BertForSequenceClassification", "masked_lm": "BertForMaskedLM"}),
    "roberta": (lambda: transformers.RobertaConfig(
        vocab_size=300, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
        max_position_embeddings=42, type_vocab_size=1, layer_norm_eps=1e-6, initializer_range=0.5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_act="gelu_new", num_labels=3), _roberta_tokenizer, 22,
        {"backbone": "RobertaModel", "text_classifier": "RobertaForSequenceClassification", "masked_lm": "RobertaForMaskedLM"}),
    "distilbert": (lambda: transformers.DistilBertConfig(
        vocab_size=97, dim=48, n_layers=2, n_heads=3, hidden_dim=80, max_position_embeddings=40,
        initializer_range=0.4, activation="gelu", num_labels=3), _bert_tokenizer, 33,
        {"backbone": "DistilBertModel", "text_classifier": "DistilBertForSequenceClassification", "masked_lm": "DistilBertForMaskedLM"}),
}
TASKS = ("backbone", "text_classifier", "masked_lm")


@pytest.fixture(scope="session")
def encoder_checkpoints(tmp_path_factory):
    """{(model_type, task): (folder, transformers model in eval mode, tokenizer)}."""
    out = {}
    for model_type, (make_config, make_tokenizer, seed, classes) in FAMILIES.items():
        tok_dir = tmp_path_factory.mktemp(f"{model_type}_tok")
        tokenizer = make_tokenizer(tok_dir)
        for task, class_name in classes.items():
            torch.manual_seed(seed)
            model = getattr(transformers, class_name)(make_config()).eval()
            folder = tmp_path_factory.mktemp(f"{model_type}_{task}")
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            out[(model_type, task)] = (folder, model, tokenizer)
    return out


def reference_outputs(model, tokenizer, texts, pairs=None, task="backbone"):
    """transformers' outputs for the same padded batch."""
    enc = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    if "distilbert" in type(model).__name__.lower():
        enc.pop("token_type_ids", None)
    with torch.no_grad():
        out = model(**enc)
    value = out.last_hidden_state if task == "backbone" else out.logits
    return value.numpy(), enc["attention_mask"].numpy()
