"""The tokenizer a GGUF file's `tokenizer.ggml.*` metadata describes, built with `tokenizers` as
transformers' GGUF conversion builds it (its `gguf_tokenizer_mapping.py` hands the vocabulary to
`LlamaTokenizer`, `GemmaTokenizer` or `GPT2Tokenizer`; the pipelines below are those classes'), so the
ids equal transformers' for the same file.

    >>> sorted(BUILDERS)
    ['gpt2', 'llama']
"""
from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from zoohub.errors import CorruptFileError, UnsupportedConfigError

# llama.cpp's token types (gguf-py's TokenType)
_CONTROL, _USER_DEFINED = 3, 4

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# `tokenizer.ggml.pre` -> the split regex its merges were learned with (others keep GPT-2's own).
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level vocabularies are spelled in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


def _merges(meta: dict, vocab: dict[str, int], scores: dict[str, float] | None = None) -> list[tuple[str, str]]:
    """The file's merges, or (sentencepiece files without them) the ones its vocabulary implies, best first
    (transformers' `generate_merges`)."""
    if meta.get("merges") is not None:
        return [tuple(m.split(" ", 1)) for m in meta["merges"]]
    if scores is None:
        scores = dict(zip(meta["tokens"], meta.get("scores") or [0.0] * len(meta["tokens"])))
    found = []
    for token, score in scores.items():
        local = [(token[:i], token[i:], score) for i in range(1, len(token))
                 if token[:i] in vocab and token[i:] in vocab]
        found.extend(sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]])))
    found.sort(key=lambda x: (x[2], len(x[0]), len(x[1])), reverse=True)
    return [(a, b) for a, b, _ in found]


def _sentencepiece(meta: dict, arch: str) -> Tokenizer:
    tokens = list(meta["tokens"])
    scores = None
    if arch in ("gemma", "gemma2", "gemma3"):
        # Gemma files store runs of spaces as spaces and order merges by position, not score.
        tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in tokens]
        scores = {t: -i for i, t in enumerate(tokens)}
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = _merges({**meta, "tokens": tokens}, vocab, scores)
    if arch in ("gemma", "gemma2", "gemma3"):  # GemmaTokenizer
        unk = meta["tokens"][meta["unk_token_id"]] if meta.get("unk_token_id") is not None else "<unk>"
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token=unk, dropout=None,
                                   byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        return tok
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None))  # LlamaTokenizer
    if arch == "phi3":  # the prefix space comes from a normalizer (transformers' phi3_tokenizer)
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    return tok


def _byte_level(meta: dict, arch: str) -> Tokenizer:
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(meta["tokens"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges(meta, vocab), dropout=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))  # GPT2Tokenizer
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


BUILDERS = {"llama": _sentencepiece, "gpt2": _byte_level}


def build(file) -> tuple[Tokenizer, dict]:
    """(tokenizer, tokenizer_config) for a `GGUFFile`."""
    def field(key):
        return file.field(f"tokenizer.ggml.{key}")

    kind = field("model")
    if kind not in BUILDERS or field("tokens") is None:
        raise UnsupportedConfigError(
            f"{file.path}: tokenizer model {kind!r} cannot be built from a GGUF vocabulary (supported: "
            f"{', '.join(sorted(BUILDERS))})")
    meta = {"tokens": field("tokens"), "scores": field("scores"), "merges": field("merges"),
            "unk_token_id": field("unknown_token_id")}
    types = field("token_type") or []
    try:
        tok = BUILDERS[kind](meta, file.arch_name)
    except Exception as e:  # tokenizers raises plain Exceptions on an inconsistent vocabulary
        raise CorruptFileError(f"{file.path}: its vocabulary does not make a {kind} tokenizer ({e})") from None
    spelled = set(bytes_to_unicode().values()) if kind == "gpt2" else None
    # Control tokens (<|endoftext|>) stay whole as special tokens, user-defined ones (<think>) as plain
    # added tokens; a byte-level "control" token spelled outside the byte alphabet is a llama.cpp mislabel.
    control = [AddedToken(t, normalized=False, special=True) for t, kind_ in zip(meta["tokens"], types)
               if kind_ == _CONTROL and (spelled is None or set(t) <= spelled)]
    tok.add_special_tokens(control)
    vocab = tok.get_vocab()
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t, kind_ in zip(meta["tokens"], types)
                    if kind_ == _USER_DEFINED and t in vocab])
    pre = field("pre")
    if kind == "gpt2" and pre in PRE_TOKENIZER_SPLITS:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRE_TOKENIZER_SPLITS[pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    config: dict = {}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        index = field(key)
        if index is not None and 0 <= index < len(meta["tokens"]):
            config[name] = meta["tokens"][index]
    # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise.
    add_bos = field("add_bos_token")
    config["add_bos_token"] = bool(kind == "llama" if add_bos is None else add_bos)
    config["add_eos_token"] = bool(field("add_eos_token") or False)
    # transformers makes its named special tokens (bos, eos, unk, pad) special added tokens too
    named = [config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if k in config]
    if file.arch_name.startswith("gemma"):
        named.append("<mask>")  # GemmaTokenizer's mask token
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in dict.fromkeys(named)
                            if t in tok.get_vocab()])
    template = file.field("tokenizer.chat_template")
    if isinstance(template, str):
        config["chat_template"] = template
    _post_processor(tok, config)
    return tok, config


def _post_processor(tok: Tokenizer, config: dict) -> None:
    """BOS/EOS as transformers' `update_post_processor` adds them, so the saved tokenizer.json agrees."""
    bos = config.get("bos_token") if config["add_bos_token"] else None
    eos = config.get("eos_token") if config["add_eos_token"] else None
    single = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else []))
    pair = single + " " + " ".join(([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else []))
    specials = [(t, tok.token_to_id(t)) for t in (bos, eos) if t]
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
