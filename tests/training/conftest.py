"""Tiny checkpoints and a learnable synthetic task for the fine-tuning tests.

Sizes are odd and distinct (vocab 97, hidden 48, 3 heads, MLP 80, 2 layers) and the classifier is
trained on a task a model can only solve by reading the words: the label is whether the sentence
holds a positive or a negative word, at a random position among filler words.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FILLER = "the a of and to in is was it for on with as by at an be this that from or are have not but".split()
POSITIVE = ["good", "great", "fine", "nice"]
NEGATIVE = ["bad", "awful", "poor", "sad"]


def _tokenizer():
    # transformers 5 ignores `vocab_file=` (every word would be [UNK]); `vocab=` takes the dict.
    return transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(_vocab())})


def _vocab() -> list[str]:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + FILLER + POSITIVE + NEGATIVE
    vocab += list("abcdefghijklmnopqrstuvwxyz")
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    return vocab + [f"[unused{i}]" for i in range(97 - len(vocab))]


def sentiment_data(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, size=int(rng.integers(2, 9))))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(POSITIVE if label else NEGATIVE)))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="session")
def bert_classifier_dir(tmp_path_factory):
    """A random BertForSequenceClassification (2 classes, named) with a WordPiece tokenizer."""
    folder = tmp_path_factory.mktemp("bert_clf")
    tokenizer = _tokenizer()
    config = transformers.BertConfig(
        vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
        max_position_embeddings=40, layer_norm_eps=1e-7, initializer_range=0.1, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(5)
    transformers.BertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def distilbert_dir(tmp_path_factory):
    """A random DistilBertModel (no head: fit adds one) for LoRA and PEFT tests."""
    folder = tmp_path_factory.mktemp("distilbert")
    tokenizer = _tokenizer()
    config = transformers.DistilBertConfig(vocab_size=97, dim=48, n_layers=2, n_heads=3, hidden_dim=80,
                                           max_position_embeddings=40, initializer_range=0.1)
    torch.manual_seed(7)
    transformers.DistilBertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sentiment():
    """(train texts, train labels, validation texts, validation labels)."""
    return (*sentiment_data(256, seed=1), *sentiment_data(64, seed=2))


SENTENCES = ["question what is two plus two answer four", "question what color is the sky answer blue",
             "the cat sat on the mat", "a dog ran in the park"]


def _bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=97, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(SENTENCES * 3, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="session")
def decoder_dirs(tmp_path_factory):
    """{"llama": folder, "gpt2": folder}: tiny random causal LMs (GQA Llama; GPT-2 with Conv1D weights)."""
    configs = {
        "llama": (transformers.LlamaConfig(
            vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=3,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=64, rms_norm_eps=3e-5,
            initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False), 21),
        "gpt2": (transformers.GPT2Config(
            vocab_size=97, n_embd=48, n_layer=2, n_head=3, n_inner=80, n_positions=64, layer_norm_epsilon=3e-5,
            initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0), 22),
    }
    out = {}
    for name, (config, seed) in configs.items():
        torch.manual_seed(seed)
        folder = tmp_path_factory.mktemp(name)
        transformers.AutoModelForCausalLM.from_config(config).eval().save_pretrained(folder)
        _bpe_tokenizer().save_pretrained(folder)
        out[name] = folder
    return out
