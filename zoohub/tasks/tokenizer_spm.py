"""Marian's tokenizer: SentencePiece models (`source.spm`, `target.spm`) whose pieces are numbered by
`vocab.json` (and `target_vocab.json` when the vocabularies are separate), as Helsinki-NLP's
opus-mt checkpoints ship it (no tokenizer.json).

It follows transformers' `MarianTokenizer`: special tokens in the text are split out first, a
leading language code (`>>fr<<`) is kept whole, the rest is cut into pieces by the SentencePiece
model, pieces map to ids through the vocabulary (unknown -> `<unk>`), and `</s>` ends each
sequence. Targets (labels) use the target model. Decoding joins pieces with the source model
unless the vocabularies are separate, as transformers does.

The pieces come from the `sentencepiece` library itself (the `marian` extra), which reads the
model file as data (a protobuf) and runs nothing from it.

    >>> SpmTokenizer.handles({"source.spm", "target.spm", "vocab.json"})
    True
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from zoohub.errors import CorruptFileError, MissingFileError
from zoohub.hub import confine

SPM_FILES = ("source.spm", "target.spm", "vocab.json", "target_vocab.json")
_UNDERLINE = "\u2581"


def _load_spm(path: Path):
    try:
        import sentencepiece
    except ImportError:
        raise MissingFileError(f"{path.parent} holds a SentencePiece tokenizer (Marian); reading it needs the "
                               "`sentencepiece` package: pip install 'zoohub[marian]'") from None
    model = sentencepiece.SentencePieceProcessor()
    try:
        model.LoadFromSerializedProto(path.read_bytes())
    except (RuntimeError, OSError) as e:
        raise CorruptFileError(f"{path} is not a SentencePiece model ({e})") from None
    return model


def _vocab(folder: Path, name: str) -> dict[str, int]:
    try:
        vocab = json.loads(confine.read_bytes(folder, name).decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise CorruptFileError(f"{folder / name} is not valid JSON ({e})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()):
        raise CorruptFileError(f"{folder / name} must map piece strings to integer ids")
    return vocab


class SpmTokenizer:
    """The `Tokenizer` interface (encode_batch, decode, special tokens) over Marian's files.

    >>> import io, json, tempfile, sentencepiece
    >>> from pathlib import Path
    >>> folder, model = Path(tempfile.mkdtemp()), io.BytesIO()
    >>> sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(["a cat sat", "a dog ran"] * 9),
    ...     model_writer=model, vocab_size=20, hard_vocab_limit=False, minloglevel=2)
    >>> for name in ("source.spm", "target.spm"):
    ...     _ = (folder / name).write_bytes(model.getvalue())
    >>> pieces = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue()).encode("a cat", out_type=str)
    >>> vocab = {"</s>": 0, "<unk>": 1, **{p: i + 2 for i, p in enumerate(pieces)}, "<pad>": 9}
    >>> _ = (folder / "vocab.json").write_text(json.dumps(vocab))  # pieces of "a cat" only: "dog" is unknown
    >>> tok = SpmTokenizer.from_folder(folder, {})
    >>> ids, _ = tok.encode_batch(["a cat", "a dog"], max_length=None)
    >>> tok.decode(ids[0]), ids[0][-1] == tok.token_id("eos_token"), tok.token_id("unk_token") in ids[1]
    ('a cat', True, True)
    """

    def __init__(self, folder: Path, config: dict):
        folder = Path(folder)
        self.folder, self.config = folder, dict(config)
        self.separate_vocabs = bool(self.config.get("separate_vocabs", False))
        self.source = _load_spm(confine.resolve(folder, "source.spm"))
        self.target = _load_spm(confine.resolve(folder, "target.spm"))
        self.vocab = _vocab(folder, "vocab.json")
        self.target_vocab = _vocab(folder, "target_vocab.json") if self.separate_vocabs else self.vocab
        self.id_to_piece = {i: p for p, i in self.target_vocab.items()}
        for name, default in (("unk_token", "<unk>"), ("eos_token", "</s>"), ("pad_token", "<pad>")):
            self.config.setdefault(name, default)
        if self.token("unk_token") not in self.vocab:
            raise CorruptFileError(f"{folder / 'vocab.json'} has no {self.token('unk_token')!r} token")
        specials = sorted({t for t in map(self.token, ("unk_token", "eos_token", "pad_token")) if t}, key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, specials)) + ")")

    @staticmethod
    def handles(names) -> bool:
        """Whether a folder with these file names holds Marian's tokenizer files."""
        return {"source.spm", "target.spm", "vocab.json"} <= set(names)

    @classmethod
    def from_folder(cls, folder: Path, config: dict) -> "SpmTokenizer":
        return cls(folder, config)

    # ---- special tokens (as `Tokenizer`) -------------------------------------------------------
    def token(self, name: str) -> str | None:
        value = self.config.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        return value if isinstance(value, str) else None

    def token_id(self, name: str) -> int | None:
        token = self.token(name)
        return None if token is None else self.vocab.get(token)

    @property
    def pad_token_id(self) -> int:
        pid = self.token_id("pad_token")
        return 0 if pid is None else pid

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def model_max_length(self) -> int | None:
        value = self.config.get("model_max_length")
        usable = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e9
        return int(value) if usable else None

    # ---- encoding ----------------------------------------------------------------------------
    def pieces(self, text: str, *, target: bool = False) -> list[str]:
        """The text's pieces: special tokens whole, a leading `>>xx<<` whole, the rest by SentencePiece."""
        model = self.target if target else self.source
        out = []
        for i, part in enumerate(self._special_split.split(text)):
            if i % 2:  # a special token
                out.append(part)
                continue
            if not part:
                continue
            code = re.match(r">>.*?<<", part) if i == 0 else None
            if code:  # transformers keeps a language code at the start of the text whole
                out.append(code.group(0))
                part = part[code.end():]
            out.extend(model.encode(part, out_type=str))
        return out

    def encode_batch(self, texts, pairs=None, *, max_length: int | None, add_special_tokens: bool = True,
                     target: bool = False):
        """Token ids (and all-zero type ids) per text, `</s>` appended, truncated to max_length
        (longest-first for pairs); `target=True` tokenizes labels with the target model."""
        vocab = self.target_vocab if target else self.vocab
        unk, eos = vocab[self.token("unk_token")], vocab.get(self.token("eos_token"))
        ids_of = lambda text: [vocab.get(p, unk) for p in self.pieces(text, target=target)]  # noqa: E731
        out = []
        for k, text in enumerate(texts):
            first, second = ids_of(text), (ids_of(pairs[k]) if pairs is not None else None)
            if max_length:
                budget = max_length - (1 if add_special_tokens else 0)
                while len(first) + len(second or []) > budget:  # longest-first, as transformers truncates
                    if second and len(second) > len(first):
                        second = second[:-1]
                    else:
                        first = first[:-1]
            ids = first + (second or []) + ([eos] if add_special_tokens else [])
            out.append(ids)
        return out, [[0] * len(ids) for ids in out]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Pieces joined by the source model (the target model when the vocabularies are separate),
        special tokens kept whole (or skipped), as `MarianTokenizer.decode`."""
        model = self.target if self.separate_vocabs else self.source
        specials = {self.token(n) for n in ("unk_token", "eos_token", "pad_token")} - {None}
        text, run = "", []
        for i in map(int, ids):
            piece = self.id_to_piece.get(i) or model.IdToPiece(i) or self.token("unk_token")
            if piece not in specials:
                run.append(piece)
            elif not skip_special_tokens:
                text, run = text + model.decode_pieces(run) + piece + " ", []
        text += model.decode_pieces(run)
        return text.replace(_UNDERLINE, " ").strip()

    def id_to_token(self, i: int) -> str | None:
        return self.id_to_piece.get(int(i))

    def tokens_to_string(self, tokens: list[str]) -> str:
        return (self.target if self.separate_vocabs else self.source).decode_pieces(list(tokens))

    def save(self, folder: Path) -> None:
        """Copy the model and vocabulary files and write tokenizer_config.json (what transformers reads)."""
        folder = Path(folder)
        for name in SPM_FILES:
            if confine.is_file(self.folder, name) and (self.folder.resolve() != folder.resolve()):
                shutil.copyfile(confine.resolve(self.folder, name), folder / name)
        config = {k: v for k, v in self.config.items() if k not in ("tokenizer_file",)}
        config.setdefault("tokenizer_class", "MarianTokenizer")
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

