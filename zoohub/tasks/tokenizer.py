"""Tokenizers from preset folders, through the `tokenizers` library (the one transformers uses).

Reads `tokenizer.json` when present, else the older `vocab.txt` (WordPiece) or
`vocab.json` + `merges.txt` (byte-level BPE), and special tokens from `tokenizer_config.json`
/ `special_tokens_map.json`.

    >>> from zoohub.presets.resolve import resolve_preset
    >>> tok = Tokenizer.from_folder(resolve_preset("starter_bert_tiny_en"))  # the bundled starter's WordPiece
    >>> ids, type_ids = tok.encode_batch(["great film", "i loved it"], max_length=16)
    >>> [[tok.id_to_token(i) for i in row] for row in ids]
    [['[CLS]', 'great', 'film', '[SEP]'], ['[CLS]', 'i', 'loved', 'it', '[SEP]']]
    >>> tok.decode(ids[0]), tok.pad_token_id, tok.token("mask_token")
    ('great film', 0, '[MASK]')
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import processors

from zoohub.errors import CorruptFileError, MissingFileError
from zoohub.hub import confine

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja",
                   "source.spm", "target.spm", "target_vocab.json")


def _content(token) -> str | None:
    """A special token's string, from `"<s>"` or `{"content": "<s>", ...}`; None for anything else."""
    value = token.get("content") if isinstance(token, dict) else token
    return value if isinstance(value, str) else None


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the special tokens and limits of `tokenizer_config.json`.

    >>> from tokenizers import Tokenizer as Raw, models
    >>> tok = Tokenizer(Raw(models.WordLevel({"[PAD]": 0, "hi": 1}, unk_token="[PAD]")), {"pad_token": "[PAD]"})
    >>> tok.pad_token_id, tok.vocab_size
    (0, 2)
    """

    def __init__(self, backend: tokenizers.Tokenizer, config: dict | None = None):
        self.backend = backend
        self.config = dict(config or {})
        self.backend.no_padding()
        self.backend.no_truncation()

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: Path) -> "Tokenizer":
        # Every file is checked to be a regular file inside the folder before it is opened (`confine`).
        folder = Path(folder)
        config: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            if confine.is_file(folder, name):
                try:
                    loaded = json.loads(confine.read_bytes(folder, name).decode("utf-8"))
                except (ValueError, RecursionError) as e:
                    raise CorruptFileError(f"{folder / name} is not valid JSON ({e})") from None
                if not isinstance(loaded, dict):
                    raise CorruptFileError(f"{folder / name} holds a JSON {type(loaded).__name__}, expected an "
                                           "object; re-save the tokenizer")
                config.update(loaded)
        if confine.is_file(folder, "tokenizer.json"):
            try:
                backend = tokenizers.Tokenizer.from_str(confine.read_bytes(folder, "tokenizer.json").decode("utf-8"))
            except Exception as e:  # tokenizers raises plain Exception subclasses
                raise CorruptFileError(f"{folder / 'tokenizer.json'} cannot be read by `tokenizers`: {e}") from None
        elif confine.is_file(folder, "vocab.txt"):
            backend = cls._wordpiece(confine.resolve(folder, "vocab.txt"), config)
        elif confine.is_file(folder, "vocab.json") and confine.is_file(folder, "merges.txt"):
            backend = cls._byte_level_bpe(confine.resolve(folder, "vocab.json"), confine.resolve(folder, "merges.txt"),
                                          config)
        elif all(confine.is_file(folder, name) for name in ("source.spm", "target.spm", "vocab.json")):
            from zoohub.tasks.tokenizer_spm import SpmTokenizer  # Marian's SentencePiece files

            return SpmTokenizer.from_folder(folder, config)
        else:
            raise MissingFileError(
                f"{folder} has no tokenizer: expected tokenizer.json, vocab.txt, vocab.json + merges.txt, "
                "or source.spm + target.spm + vocab.json"
            )
        return cls(backend, config)

    @staticmethod
    def _wordpiece(vocab: Path, config: dict) -> tokenizers.Tokenizer:
        from tokenizers.implementations import BertWordPieceTokenizer

        tok = BertWordPieceTokenizer(
            str(vocab), lowercase=config.get("do_lower_case", True),
            strip_accents=config.get("strip_accents"), clean_text=True,
            handle_chinese_chars=config.get("tokenize_chinese_chars", True),
            unk_token=_content(config.get("unk_token")) or "[UNK]",
            sep_token=_content(config.get("sep_token")) or "[SEP]",
            cls_token=_content(config.get("cls_token")) or "[CLS]",
            pad_token=_content(config.get("pad_token")) or "[PAD]",
            mask_token=_content(config.get("mask_token")) or "[MASK]",
        )
        return tok._tokenizer

    @staticmethod
    def _byte_level_bpe(vocab: Path, merges: Path, config: dict) -> tokenizers.Tokenizer:
        from tokenizers.implementations import ByteLevelBPETokenizer

        tok = ByteLevelBPETokenizer(str(vocab), str(merges),
                                    add_prefix_space=config.get("add_prefix_space", False))
        raw = tok._tokenizer
        cls_token, sep_token = _content(config.get("cls_token")), _content(config.get("sep_token"))
        if cls_token and sep_token:  # RoBERTa-style <s> A </s></s> B </s>
            raw.post_processor = processors.RobertaProcessing(
                (sep_token, raw.token_to_id(sep_token)), (cls_token, raw.token_to_id(cls_token)))
        return raw

    def save(self, folder: Path) -> None:
        """Write tokenizer.json and tokenizer_config.json (transformers 5 writes only these)."""
        self.backend.save(str(Path(folder) / "tokenizer.json"))
        config = {k: v for k, v in self.config.items() if k not in ("tokenizer_file",)}
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    # ---- special tokens --------------------------------------------------------------------
    def token(self, name: str) -> str | None:
        """The special token string for `bos_token`, `pad_token`, ... (None when undefined)."""
        return _content(self.config.get(name))

    def token_id(self, name: str) -> int | None:
        token = self.token(name)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def pad_token_id(self) -> int:
        pid = self.token_id("pad_token")
        return 0 if pid is None else pid

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def model_max_length(self) -> int | None:
        value = self.config.get("model_max_length")
        usable = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e9
        return int(value) if usable else None

    # ---- encoding --------------------------------------------------------------------------
    def encode_batch(self, texts, pairs=None, *, max_length: int | None, add_special_tokens: bool = True):
        """Token ids and token type ids per text (no padding), truncated to max_length
        (longest-first for pairs, as transformers does)."""
        if max_length:
            self.backend.enable_truncation(max_length, strategy="longest_first")
        else:
            self.backend.no_truncation()
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        encodings = self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings], [e.type_ids for e in encodings]

    def encodings(self, texts, pairs=None, *, max_length: int | None, stride: int = 0,
                  strategy: str = "longest_first", is_pretokenized: bool = False) -> list[tokenizers.Encoding]:
        """`tokenizers` Encodings (ids, character `offsets`, `special_tokens_mask`, `sequence_ids`, words).

        With `stride`, text truncated past max_length continues in `encoding.overflowing` windows that
        overlap by `stride` tokens (`strategy="only_second"` cuts only the pair: a QA context).
        `is_pretokenized`: each text is a list of words (`word_ids` then index them)."""
        if max_length:
            self.backend.enable_truncation(max_length, stride=stride, strategy=strategy)
        else:
            self.backend.no_truncation()
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        return self.backend.encode_batch(inputs, is_pretokenized=is_pretokenized)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def tokens_to_string(self, tokens: list[str]) -> str:
        """Token strings joined as the tokenizer's decoder joins them (transformers' convert_tokens_to_string)."""
        decoder = self.backend.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(int(i))


def pad_batch(sequences: list[list[int]], *, length: int, pad_id: int, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Pad to `length`: ids [B, length] int32 and attention mask (1 = real token)."""
    ids = np.full((len(sequences), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(sequences), length), dtype=np.int32)
    for i, seq in enumerate(sequences):
        seq = seq[:length]
        if left:
            ids[i, length - len(seq):] = seq
            mask[i, length - len(seq):] = 1
        else:
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = 1
    return ids, mask


def bucket_length(n: int, *, minimum: int = 16, maximum: int | None = None) -> int:
    """Round up to a power of two (>= minimum, <= maximum) so jitted shapes repeat."""
    size = minimum
    while size < n:
        size *= 2
    return min(size, maximum) if maximum else size
