"""Fuzzing the readers of what a preset folder holds, and chat templates (property-based, hypothesis).

Inputs are built, not only random: a valid file is made first (a safetensors file, a shard index, a
family's config.json, a tokenizer.json, zoohub.json with its manifest, a chat template), then edited
where the parser looks (a field's value or type, offsets and shapes, file names, the length prefix,
nesting) or mutated byte by byte. The property for every reader: it returns, or raises a
`zoohub.errors` class whose message names the file or thing; no other exception escapes, no example
runs past `SECONDS`, and no test grows the process's data by more than `MEMORY` (the data segment
is capped while the tests run, so an attempt at gigabytes fails as a MemoryError, which the
properties report).

Runs are deterministic (`derandomize=True`) and write no example database.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import struct
import tempfile
import time
import typing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zoohub.backbones import get_family, supported_model_types
from zoohub.errors import InputError, ZoohubError

EXAMPLES = 1000
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))
SECONDS = 2.0
"""Wall-clock bound of one example."""
MEMORY = 1 << 30
"""Bytes one test may add to the process's data segment."""
WEIGHTS, INDEX = "model.safetensors", "model.safetensors.index.json"


# ---- the bounds: time, memory, and what a failure must look like ---------------------------------------

class _Hang(BaseException):
    """Raised by the alarm into an example that runs past SECONDS (not an Exception: nothing swallows it)."""


def _vm_data() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmData:")), None)
    return None if line is None else int(line.split()[1]) * 1024


@pytest.fixture(autouse=True)
def _memory_cap():
    """Cap the data segment at its current size + MEMORY for the test: a reader that tries to allocate
    gigabytes gets a MemoryError (an escape, reported) instead of swapping the machine."""
    used = _vm_data()
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if used is not None:
        cap = used + MEMORY
        resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


@contextlib.contextmanager
def _bounded(seconds: float = SECONDS):
    def alarm(signum, frame):
        raise _Hang(f"an example ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < seconds, f"an example took {time.monotonic() - start:.1f} s"


def _outcome(call, *names: str):
    """call()'s result, or the ZoohubError it raised, whose message must name one of `names`.
    Any other exception propagates and fails the property."""
    with _bounded():
        try:
            return call()
        except ZoohubError as e:
            message = str(e)
            assert message.strip(), f"{type(e).__name__} with an empty message"
            assert any(n in message for n in names), f"{type(e).__name__} does not name any of {names}: {message}"
            return e


@pytest.fixture
def scratch(tmp_path):
    """A folder for the examples' files: in memory (tmpfs) where the system has one, since a property
    writes thousands of small files and creating one costs a millisecond on some disks."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="zoohub-fuzz-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fill(folder: Path, files: dict[str, bytes]) -> Path:
    """Make `folder` hold exactly `files` (kept from one example to the next: removing it is slow)."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.name not in files:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


# ---- strategies shared by the file formats ------------------------------------------------------------

_BIG_INTS = [0, 1, -1, 2, 3, 255, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**60, 2**62, 2**63 - 1, 2**63, 2**64 - 1,
             2**64, 2**100, -2**63, -2**64]
ints = st.one_of(st.integers(-3, 100), st.sampled_from(_BIG_INTS))
texts = st.one_of(st.text(max_size=12),
                  st.sampled_from(("", "null", "F32", "../x", "/etc/passwd", "a\x00b", "\ud800x")))
scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(texts, inner, max_size=4)), max_leaves=10)


def _dumps(value) -> bytes:
    """JSON as Python writes it (NaN and Infinity included, as json.loads reads them); lone surrogates
    become invalid UTF-8 bytes, which is one more thing a reader must refuse."""
    return json.dumps(value).encode("utf-8", "surrogatepass") if not isinstance(value, bytes) else value


@st.composite
def byte_mutations(draw, data: bytes) -> bytes:
    """`data` after a few byte-level edits: flips, deletions, insertions, truncation, deep nesting."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "delete", "insert", "truncate", "nest", "duplicate")))
        at = draw(st.integers(0, max(len(out), 1))) % (len(out) + 1)
        if op == "flip" and out:
            out[min(at, len(out) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del out[at:at + draw(st.integers(1, 16))]
        elif op == "insert":
            out[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=8),
                                        st.sampled_from([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\xff",
                                                         b"\x00", b"1e999", b"-0", b"NaN", b"99999999999999999999"])))
        elif op == "truncate":
            del out[at:]
        elif op == "nest":  # deeper than the JSON parser's recursion limit
            depth = draw(st.sampled_from((100, 5000, 100_000)))
            out[at:at] = b"[" * depth
        elif op == "duplicate":
            out[at:at] = bytes(out[at:at + draw(st.integers(1, 64))])
    return bytes(out)


def _json_file(draw, value) -> bytes:
    """A JSON file for `value`: as written, or mutated byte by byte (one in four)."""
    data = _dumps(value)
    return draw(byte_mutations(data)) if draw(st.integers(0, 3)) == 0 else data


@st.composite
def edited(draw, value):
    """`value` (a JSON tree) with one to three nodes replaced, removed or added: the parser's deep paths
    see wrong types and values where they expect right ones."""
    value = json.loads(json.dumps(value))  # a copy
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(value))
        path = draw(st.sampled_from(paths))
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        if not path:
            value = draw(json_values)
            continue
        op = draw(st.sampled_from(("replace", "replace", "delete", "add")))
        key = path[-1]
        if op == "replace":
            parent[key] = draw(json_values)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(texts)] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return value


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


# ---- safetensors headers ------------------------------------------------------------------------------

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1}
tensor_names = st.one_of(st.sampled_from(("a.weight", "b.bias", "__metadata__", "", "x" * 300)), st.text(max_size=6))


@st.composite
def safetensors_files(draw) -> tuple[bytes, dict]:
    """(file bytes, the header it was built from): a valid file, then edits to the header's structure,
    its numbers (offsets and shapes up to 2**64, a 2**60-byte tensor), the length prefix, the data size,
    or the bytes."""
    header, offset = {}, 0
    for name in draw(st.lists(tensor_names, max_size=4, unique=True)):
        dtype = draw(st.sampled_from(sorted(_ITEMSIZE)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = math.prod(shape) * _ITEMSIZE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.one_of(st.just({"format": "pt"}), json_values))
    kind = draw(st.sampled_from(("valid", "edit", "numbers", "huge", "length", "data", "bytes")))
    if kind == "edit" and header:
        header = draw(edited(header))
    elif kind == "numbers" and header:
        info = header[draw(st.sampled_from(sorted(header)))]
        if isinstance(info, dict):
            field = draw(st.sampled_from(("data_offsets", "shape")))
            info[field] = draw(st.lists(ints, max_size=4))
    elif kind == "huge":  # claims 2**60 bytes (or a shape whose product overflows 64 bits)
        shape = draw(st.sampled_from([[2**30, 2**30], [2**62], [2**32, 2**32, 2**32], [-1, -2**62]]))
        stop = draw(st.sampled_from((offset + 2**60, offset + 4 * math.prod(shape), 2**64 - 1)))
        header["huge"] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, stop]}
    blob = _dumps(header) + b" " * draw(st.integers(0, 7))
    length = len(blob)
    if kind == "length":
        length = draw(st.one_of(ints, st.sampled_from((len(blob) - 1, len(blob) + 1)))) % 2**64
    data_size = offset
    if kind == "data":
        data_size = max(0, offset + draw(st.sampled_from((-4, -1, 1, 8, 2**16))))
    file = struct.pack("<Q", length) + blob + draw(st.binary(min_size=min(data_size, 64), max_size=min(data_size, 64)))
    file += bytes(max(0, data_size - min(data_size, 64)))
    if kind == "bytes":
        file = draw(byte_mutations(file))
    return file, header


def _check_tensors(tensors: dict, file_size: int) -> None:
    """What a successful read hands out: arrays inside the file, readable."""
    assert sum(a.nbytes for a in tensors.values()) <= file_size
    for array in tensors.values():
        assert isinstance(array, np.ndarray)
        np.asarray(array).tobytes()


@FUZZ
@given(safetensors_files())
def test_safetensors_headers(scratch, case):
    from zoohub.hub.validate import read_safetensors_header
    from zoohub.presets.weights import read_safetensors, read_weights

    file, _ = case
    folder = _fill(scratch / "p", {WEIGHTS: file})
    with open(folder / WEIGHTS, "rb") as f:
        header = _outcome(lambda: read_safetensors_header(f, folder / WEIGHTS), WEIGHTS)
    tensors = _outcome(lambda: read_safetensors(folder, WEIGHTS), WEIGHTS)
    if isinstance(header, ZoohubError):
        assert isinstance(tensors, ZoohubError), "read_safetensors read a file whose header is refused"
    elif not isinstance(tensors, ZoohubError):
        _check_tensors(tensors, len(file))
        assert set(tensors) == set(header[0])
    weights = _outcome(lambda: read_weights(folder), WEIGHTS)
    assert type(weights) is type(tensors)


def test_huge_tensor_claims_are_refused_before_allocating(tmp_path):
    """A header claiming a 2**60-byte tensor, or a header length of 2**63, is refused at once."""
    from zoohub.errors import CorruptFileError
    from zoohub.presets.weights import read_safetensors

    header = json.dumps({"w": {"dtype": "F32", "shape": [2**29, 2**29], "data_offsets": [0, 2**60]}}).encode()
    for file in (struct.pack("<Q", len(header)) + header + bytes(16), struct.pack("<Q", 2**63) + header):
        folder = _fill(tmp_path / "p", {WEIGHTS: file})
        with _bounded(0.5), pytest.raises(CorruptFileError, match=WEIGHTS):
            read_safetensors(folder, WEIGHTS)


# ---- shard indexes ------------------------------------------------------------------------------------

SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
BAD_SHARD_NAMES = ["../model-00001-of-00002.safetensors", "/etc/passwd", "model.bin", "", ".", "sub/x.safetensors",
                   "a\x00.safetensors", "C:\\x.safetensors", "x" * 300 + ".safetensors", INDEX, "model.safetensors",
                   "..", "./" + SHARDS[0]]


def _shard(tensors: dict[str, np.ndarray]) -> bytes:
    header, offset, data = {}, 0, b""
    for name, array in tensors.items():
        raw = array.tobytes()
        header[name] = {"dtype": {np.float32: "F32", np.int8: "I8"}[array.dtype.type], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset, data = offset + len(raw), data + raw
    blob = json.dumps(header).encode()
    return struct.pack("<Q", len(blob)) + blob + data


@st.composite
def shard_folders(draw) -> dict[str, bytes]:
    """Two real shards (some files missing) and an index whose weight_map names them, tensors they
    lack, names outside the folder or of the wrong kind, non-strings; or whose structure is edited."""
    contents = {SHARDS[0]: {"a.weight": np.ones((2, 3), np.float32)},
                SHARDS[1]: {"b.weight": np.arange(4, dtype=np.int8)}}
    files = {name: _shard(t) for name, t in contents.items() if draw(st.integers(0, 4))}
    weight_map = {"a.weight": SHARDS[0], "b.weight": SHARDS[1]}
    kind = draw(st.sampled_from(("valid", "names", "tensors", "edit")))
    if kind == "names":
        weight_map[draw(st.sampled_from(("a.weight", "b.weight", "c.weight")))] = draw(
            st.one_of(st.sampled_from(BAD_SHARD_NAMES + SHARDS), json_values))
    elif kind == "tensors":
        weight_map = draw(st.dictionaries(st.sampled_from(("a.weight", "b.weight", "c.weight", "")),
                                          st.sampled_from(SHARDS), max_size=3))
    index = {"metadata": {"total_size": 28}, "weight_map": weight_map}
    if kind == "edit":
        index = draw(edited(index))
    files[INDEX] = _json_file(draw, index)
    if draw(st.integers(0, 5)) == 0:
        files[WEIGHTS] = _shard({"z": np.zeros(1, np.float32)})  # beside an index, which wins
    return files


@FUZZ
@given(shard_folders())
def test_shard_indexes(scratch, files):
    from zoohub.presets.weights import read_weights, weight_files

    folder = _fill(scratch / "p", files)
    names = (INDEX, ".safetensors", "shard")
    found = _outcome(lambda: weight_files(folder), *names)
    if not isinstance(found, ZoohubError):
        assert all(isinstance(n, str) and (folder / n).resolve().is_relative_to(folder.resolve()) for n in found)
    tensors = _outcome(lambda: read_weights(folder), *names)
    if not isinstance(tensors, ZoohubError):
        _check_tensors(tensors, sum(len(b) for b in files.values()))
        assert isinstance(found, list)


# ---- config.json, through every family's config class --------------------------------------------------

MODEL_TYPES = supported_model_types()


def _type_ok(value, hint) -> bool:
    allowed = typing.get_args(hint) or (hint,)
    for t in allowed:
        if t is type(None) and value is None or t is bool and isinstance(value, bool):
            return True
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t in (int, str, dict, list) and isinstance(value, t) and not isinstance(value, bool):
            return True
    return False


_CONFIG_KEYS = {t: st.one_of(st.sampled_from(sorted({"model_type", *get_family(t).config_class.handled_keys(),
                                                      *get_family(t).config_class.checks()})),
                             st.sampled_from(("architectures", "torch_dtype", "id2label")), texts)
                for t in MODEL_TYPES}
_CONFIG_VALUES = st.one_of(json_values, ints, st.sampled_from((0, -1, 1.5, True, None, "", "[]", "{}")).map(
    lambda v: json.loads(v) if v in ("[]", "{}") else v))


@st.composite
def configs(draw) -> bytes:
    """A family's config.json (from its tiny test recipe) with keys set to values of random JSON types,
    random keys added, model_type replaced, the whole file replaced or mutated."""
    model_type = draw(st.sampled_from(MODEL_TYPES))
    family = get_family(model_type)
    config = {**(family.recipe.kwargs if family.recipe else {}), "model_type": model_type}
    for _ in range(draw(st.integers(0, 4))):
        config[draw(_CONFIG_KEYS[model_type])] = draw(_CONFIG_VALUES)
    if draw(st.integers(0, 9)) == 0:
        config = draw(json_values)
    return _json_file(draw, config)


@settings(FUZZ, max_examples=2 * EXAMPLES)
@given(configs())
def test_configs(scratch, data):
    """config.json read, then parsed by its family's config class: a config, or an error naming it; a
    parsed config's fields have their annotated types (a string for a size would fail later, far away)."""
    from zoohub.presets.folder import read_config

    folder = _fill(scratch / "p", {"config.json": data})

    def parse():
        hf = read_config(folder)
        return get_family(hf["model_type"]).config_class.from_hf(hf)

    config = _outcome(parse, "config.json", "config", "model_type")
    if not isinstance(config, ZoohubError):
        hints = typing.get_type_hints(type(config))
        for key in type(config).handled_keys():
            assert _type_ok(getattr(config, key), hints[key]), (key, getattr(config, key), hints[key])


# ---- tokenizer.json (and the special tokens of tokenizer_config.json) ----------------------------------

def _tokenizer_jsons() -> list[dict]:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", "h", "e", "l", "o"]
    vocab = {t: i for i, t in enumerate(tokens)}
    wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    wordpiece.decoder = decoders.WordPiece()
    bpe = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2, "Ġ": 3, "<s>": 4}, [("a", "b")], unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(["<s>"])
    unigram = Tokenizer(models.Unigram([("<unk>", 0.0), ("▁he", -1.0), ("llo", -2.0), ("▁", -3.0)], 0))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    level = Tokenizer(models.WordLevel({"[PAD]": 0, "hi": 1, "<unk>": 2}, unk_token="<unk>"))
    level.pre_tokenizer = pre_tokenizers.Whitespace()
    return [json.loads(t.to_str()) for t in (wordpiece, bpe, unigram, level)]


TOKENIZERS = _tokenizer_jsons()
special_tokens = st.one_of(st.sampled_from(["[PAD]", "<s>", "hello", "", None]), json_values,
                           st.fixed_dictionaries({"content": json_values}))


@st.composite
def tokenizer_folders(draw) -> dict[str, bytes]:
    """A real tokenizer.json (WordPiece, byte-level BPE, Unigram or WordLevel) with its tree edited or
    its bytes mutated, and a tokenizer_config.json whose special tokens and limits have random types."""
    files = {"tokenizer.json": _json_file(draw, draw(edited(draw(st.sampled_from(TOKENIZERS))))
                                          if draw(st.integers(0, 4)) else draw(st.sampled_from(TOKENIZERS)))}
    if draw(st.booleans()):
        config = draw(st.fixed_dictionaries({}, optional={
            "pad_token": special_tokens, "bos_token": special_tokens, "unk_token": special_tokens,
            "model_max_length": st.one_of(ints, st.floats(), json_values), "chat_template": json_values}))
        if draw(st.integers(0, 9)) == 0:
            config = draw(json_values)
        files[draw(st.sampled_from(("tokenizer_config.json", "special_tokens_map.json")))] = _json_file(draw, config)
    return files


@FUZZ
@given(tokenizer_folders())
def test_tokenizers(scratch, files):
    from zoohub.tasks.tokenizer import Tokenizer

    folder = _fill(scratch / "p", files)
    tok = _outcome(lambda: Tokenizer.from_folder(folder), *files)
    if not isinstance(tok, ZoohubError):  # what loading promises: the special tokens and limits read
        with _bounded():
            assert isinstance(tok.vocab_size, int)
            assert isinstance(tok.pad_token_id, int)
            assert tok.model_max_length is None or isinstance(tok.model_max_length, int)
            assert all(tok.token_id(n) is None or isinstance(tok.token_id(n), int) for n in ("bos_token", "unk_token"))


# ---- zoohub.json: metadata and the manifest check --------------------------------------------------------

MANIFEST_NAMES = ["config.json", "missing.json", "../config.json", "/etc/passwd", "", ".", "sub/../config.json",
                  "a\x00b", "x" * 5000, "sub/", "zoohub.json", "C:\\config.json", "config.json/"]


@st.composite
def manifests(draw) -> dict[str, bytes]:
    """zoohub.json as saving writes it, naming a real file with the right or wrong size and sha256, names
    outside the folder or too long, infos of random types; the structure edited or the bytes mutated."""
    content = b'{"model_type": "bert"}'
    right = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    files = {}
    for name in draw(st.lists(st.sampled_from(MANIFEST_NAMES), max_size=3, unique=True)):
        wrong = st.fixed_dictionaries({"size": st.one_of(ints, json_values),
                                       "sha256": st.one_of(st.just(right["sha256"]), json_values)})
        files[name] = draw(st.one_of(st.just(right), json_values, wrong))
    meta = {"zoohub_version": "0.1.0", "task": "backbone", "preset": "p", "files": files}
    if draw(st.integers(0, 2)) == 0:
        meta = draw(edited(meta))
    return {"config.json": content, "zoohub.json": _json_file(draw, meta)}


@FUZZ
@given(manifests(), st.lists(st.sampled_from(MANIFEST_NAMES), max_size=3), st.booleans())
def test_zoohub_json(scratch, files, fetched, remote):
    from zoohub.hub.integrity import check_manifest
    from zoohub.presets.folder import read_json

    folder = _fill(scratch / "p", files)
    meta = _outcome(lambda: read_json(folder, "zoohub.json"), "zoohub.json")
    if not isinstance(meta, ZoohubError):  # how loading uses it
        assert isinstance(meta, dict), f"read_json returned a {type(meta).__name__} for zoohub.json"
        meta.pop("files", None)
    _outcome(lambda: check_manifest(folder), "zoohub.json", "config.json")
    where = "https://hub.example/p" if remote else None
    _outcome(lambda: check_manifest(folder, fetched, where), "zoohub.json", *MANIFEST_NAMES[:2])


# ---- chat templates --------------------------------------------------------------------------------------

LLAMA3 = ("{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}"
           "{{ message['content'] + eos_token }}{% endif %}{% endfor %}")
TOOLS = ("{% set ns = namespace(system='') %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.system = "
         "ns.system ~ m.content %}{% endif %}{% endfor %}{{ ns.system }}{{ tools | tojson(indent=4) }}"
         "{{ strftime_now('%d %b %Y') | length > 0 }}{% for m in messages | selectattr('role', 'ne', 'system') %}"
         "{{ '%s: %s' % (m.role, m.content) }}{{ '{}|'.format(loop.index) }}{% endfor %}")
REAL_TEMPLATES = [LLAMA3, CHATML, MISTRAL, TOOLS]

_NAMES = ["messages", "messages[0]", "message", "m", "loop", "ns", "range", "namespace", "cycler", "joiner", "lipsum",
          "raise_exception", "strftime_now", "bos_token", "add_generation_prompt", "tools", "self", "x"]
_ATTRS = ["role", "content", "__class__", "__mro__", "__subclasses__", "__globals__", "__builtins__", "__init__",
          "__dict__", "__code__", "__self__", "__func__", "mro", "gi_frame", "f_globals", "_TemplateReference__context",
          "format", "format_map", "join", "replace", "center", "ljust", "zfill", "upper", "split", "items", "append",
          "pop", "update", "index0", "length", "os", "popen", "read", "cycle", "next"]
_FILTERS = ["center", "indent", "format", "replace", "join", "wordwrap", "tojson", "batch", "slice", "list", "sum",
            "int", "round", "truncate", "trim", "length", "string", "attr", "map", "select", "first", "last", "unique",
            "sort", "reverse", "e", "safe", "default", "dictsort", "items", "wordcount", "title", "pprint"]
_BINOPS = ["*", "**", "%", "+", "-", "~", "//", "/", "==", "in", "and", "or"]
_LITERALS = ["0", "1", "2", "-1", "3", "300", "100000", "10**9", "10**10", "2**63", "10**100", "'x'", "''", "'%s'",
             "'%0999999999d'", "'{:>999999999}'", "'{0.__class__}'", "'\\n'", "[1, 2]", "{'a': 1}", "none", "true"]
template_exprs = st.deferred(lambda: st.one_of(
    st.sampled_from(_NAMES), st.sampled_from(_LITERALS),
    st.tuples(template_exprs, st.sampled_from(_ATTRS)).map(lambda t: f"({t[0]}).{t[1]}"),
    st.tuples(template_exprs, template_exprs).map(lambda t: f"({t[0]})[{t[1]}]"),
    st.tuples(template_exprs, st.lists(template_exprs, max_size=2)).map(lambda t: f"({t[0]})({', '.join(t[1])})"),
    st.tuples(template_exprs, st.sampled_from(_FILTERS), st.lists(template_exprs, max_size=2)).map(
        lambda t: f"({t[0]}|{t[1]}({', '.join(t[2])}))"),
    st.tuples(template_exprs, st.sampled_from(_BINOPS), template_exprs).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
))
template_parts = st.deferred(lambda: st.one_of(
    template_exprs.map(lambda e: "{{ " + e + " }}"),
    st.text(st.characters(exclude_characters="{}%#"), max_size=6),
    st.tuples(st.sampled_from(("x", "m", "i")), template_exprs, st.lists(template_parts, max_size=3)).map(
        lambda t: "{% for " + t[0] + " in " + t[1] + " %}" + "".join(t[2]) + "{% endfor %}"),
    st.tuples(template_exprs, st.lists(template_parts, max_size=3)).map(
        lambda t: "{% if " + t[0] + " %}" + "".join(t[1]) + "{% endif %}"),
    st.tuples(st.sampled_from(("x", "ns.x", "ns")), template_exprs).map(
        lambda t: "{% set " + t[0] + " = " + t[1] + " %}"),
    st.just("{% set ns = namespace(x='') %}"),
    st.lists(template_parts, max_size=2).map(lambda p: "{% macro f(x) %}" + "".join(p) + "{% endmacro %}{{ f(1) }}"),
))
generated_templates = st.lists(template_parts, min_size=1, max_size=4).map("".join)


@st.composite
def mutated_templates(draw) -> str:
    """A real template with a few Jinja tokens inserted, deleted or swapped."""
    template = draw(st.sampled_from(REAL_TEMPLATES))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(template)))
        if draw(st.booleans()):
            token = draw(st.sampled_from(["{{", "}}", "{%", "%}", "|", ".", "(", ")", "'", "*", "**", "~", "[", "]",
                                          ".__class__", ".__globals__", "|center(10**10)", " * 10**10", "endfor", "-"]))
            template = template[:at] + token + template[at:]
        else:
            template = template[:at] + template[at + draw(st.integers(1, 8)):]
    return template


messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(("system", "user", "assistant", "tool", "")),
                                           "content": st.one_of(st.text(max_size=20), st.just("{{ 7*7 }}"))}),
                    max_size=4)


@pytest.fixture
def quick_chat(monkeypatch):
    """A shorter time budget for rendering, so examples that loop for long stop in 0.2 s."""
    from zoohub.tasks import chat

    monkeypatch.setattr(chat, "_MAX_SECONDS", 0.2)
    return chat


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jinja2 on string literals with unknown escapes
@FUZZ
@given(st.one_of(generated_templates, mutated_templates()), messages, st.booleans())
def test_chat_templates(quick_chat, template, chat_messages, add_generation_prompt):
    out = _outcome(lambda: quick_chat.render_chat(template, chat_messages, add_generation_prompt=add_generation_prompt,
                                                  special_tokens={"bos_token": "<s>", "eos_token": "</s>"},
                                                  tools=[{"name": "f"}]),
                   "chat template")
    assert isinstance(out, (str, InputError))


@functools.lru_cache
def _plain_jinja(template: str):
    """The template in jinja2's own sandbox with transformers' globals, and no other guard."""
    from datetime import datetime

    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


@FUZZ
@given(st.sampled_from(REAL_TEMPLATES), messages, st.booleans())
def test_chat_templates_render_as_jinja_does(template, chat_messages, add_generation_prompt):
    """The guards change nothing for real templates: the output is plain jinja2's sandbox output (with
    the default time budget, so a loaded machine does not make this flaky)."""
    import jinja2

    from zoohub.tasks.chat import render_chat

    context = {"bos_token": "<s>", "eos_token": "</s>", "tools": [{"name": "f"}]}
    try:
        expected = _plain_jinja(template).render(messages=chat_messages, add_generation_prompt=add_generation_prompt,
                                                 **context)
    except jinja2.TemplateError as e:
        with pytest.raises(InputError) as refused:
            render_chat(template, chat_messages, add_generation_prompt=add_generation_prompt, **context)
        assert str(e) in str(refused.value)
        return
    got = render_chat(template, chat_messages, add_generation_prompt=add_generation_prompt, **context)
    assert got == expected


ATTACKS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ joiner.__init__.__globals__['os'].system('touch MARKER') }}",
    "{{ lipsum.__globals__['os'].popen('touch MARKER') }}",
    "{{ namespace.__init__.__builtins__['open']('MARKER', 'w') }}",
    "{{ raise_exception.__globals__ }}",
    "{{ strftime_now.__globals__['__builtins__'] }}",
    "{{ self._TemplateReference__context }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ messages[0] | attr('__class__') }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ range.__self__ }}",
    "{{ messages.append(1) }}",
    "{% include '/etc/passwd' %}",
    "{{ range(10**10) | list }}",
    "{{ 'a' * 10**10 }}",
    "{{ 'a' * 10000000000 }}",
    "{{ [1] * 10**10 }}",
    "{{ 2 ** 10000000000 }}",
    "{{ 'a' | center(10000000000) }}",
    "{{ 'a'.ljust(10**10) }}",
    "{{ ('x\\n' * 1000) | indent(10**9) }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%0999999999d' | format(1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ lipsum(10**6) }}",
    "{{ [1] | batch(10**9, 'x') | list }}",
    "{{ [[[[1]]]] | tojson(indent=10**9) }}",
    "{% set s = 'x' * 100000 %}{{ s.replace('', s) }}",
    "{% set s = 'x' * 100000 %}{{ s | join(s) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% set s = 'ab' * 1000 %}{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set a = 'xxxxxxxx' %}" + "{% set a = a ~ a %}" * 60,
    "{% set a = 'xxxxxxxx' %}" + "{% set a = a + a %}" * 60,
    "{% set a = ['x'] %}" + "{% set a = [a, a] %}" * 60 + "{{ a }}",
    "{% set a = ['x'] %}" + "{% set a = [a, a] %}" * 60 + "{{ a | tojson }}",
    "{% set a = 'x' * 1000 %}" + "{% set a %}{{ a }}{{ a }}{% endset %}" * 60,
    "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ f('x', 64) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% for x in range(100000) %}{{ 'y' * 100000 }}{% endfor %}",
    "{% for x in range(100000) %}" + "z" * 1000 + "{% endfor %}",
]


@pytest.mark.parametrize("template", ATTACKS)
def test_chat_template_attacks_fail(quick_chat, template, tmp_path, monkeypatch):
    """Escapes from the sandbox and resource attacks raise InputError, at once, running nothing."""
    monkeypatch.chdir(tmp_path)
    with _bounded(), pytest.raises(InputError, match="chat template"):
        quick_chat.render_chat(template, [{"role": "user", "content": "hi"}])
    assert not (tmp_path / "MARKER").exists()
