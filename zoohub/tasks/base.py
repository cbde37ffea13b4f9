"""The friendly shell every task shares: from_preset, params on the backend, save_to_preset.

A task holds `family`, `config`, `params` (a nested dict whose dotted paths are the
checkpoint's tensor names), a tokenizer, and the preset's auxiliary files. Its math is a pure
function of (params, inputs), jit-compiled on jax.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zoohub.backbones import Family, Head, get_family
from zoohub.backbones.layout import SHARDINGS, host_tensors, mesh_specs, stack_layers, unstack_layers
from zoohub.backbones.loading import LoadReport, load_params
from zoohub.backend import get_backend, ops, using
from zoohub.backend.memory import release_free_memory
from zoohub.errors import BackendError, InputError, UnsupportedArchitectureError
from zoohub.presets.folder import ZOOHUB_FILE, read_aux_files, read_config, read_json, save_preset_folder
from zoohub.presets.gguf import find_gguf
from zoohub.presets.resolve import resolve_preset
from zoohub.presets.weights import flatten, read_weights, unflatten, write_weights
from zoohub.tasks.tokenizer import TOKENIZER_FILES, Tokenizer

# Files copied verbatim from the loaded preset into a saved one.
AUX_FILES = TOKENIZER_FILES + (
    "generation_config.json", "preprocessor_config.json", "modules.json", "sentence_bert_config.json",
    "config_sentence_transformers.json", "1_Pooling/config.json",
)


def _dtype(name: str | None):
    if name is None:
        return None
    if name in ("bfloat16", "bf16"):
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def to_backend(flat: dict[str, np.ndarray], family: Family, head: Head | None, dtype: str | None = None,
               mesh=None, sharding: str = "tensor") -> dict:
    """Nested params in the task layout (layers stacked where the family says) on the selected backend;
    floating tensors cast to `dtype` when given.

    numpy keeps memory-mapped views (no copy) of what it need not stack or cast. With a jax `mesh`,
    each tensor goes straight into its shards by the family's tensor-parallel rules (`sharding="fsdp"`:
    over the data axis as well); each process reads only the slices its own devices hold."""
    target = _dtype(dtype)
    from zoohub.backbones.layout import to_layout

    layers = family.layers_path(head)
    flat = to_layout(flat, family, head)
    if mesh is not None:
        if get_backend() != "jax":
            raise BackendError("mesh= (sharding) needs the jax backend")
        from zoohub.backend.sharding import place

        specs = mesh_specs(family, layers, {k: v.shape for k, v in flat.items()}, dict(mesh.shape), sharding)
        return unflatten(place(flat, mesh, specs, dtype=target))
    o = ops()
    params = unflatten({name: o.asarray(arr) for name, arr in host_tensors(flat, target)})
    if o.name == "jax":
        release_free_memory()  # the host-side stacking copies are gone; give their heap pages back
    return params


def checkpoint_tensors(task, flat: dict) -> dict[str, np.ndarray]:
    """Host tensors of a task's flat params under the checkpoint's names (stacked layers split)."""
    o = ops(task.backend)
    from zoohub.backbones.layout import from_layout

    return from_layout({k: o.to_numpy(v) for k, v in flat.items()}, task.family, task.head)


def dtype_name(params) -> str:
    leaves = [v for v in flatten(params).values() if np.dtype(v.dtype).kind == "f" or str(v.dtype) == "bfloat16"]
    return str(leaves[0].dtype) if leaves else "float32"


def _iterate_on(backend: str, items: Iterator) -> Iterator:
    while True:
        with using(backend):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


def on_own_backend(method):
    """Run a task method on the backend the task was built on, whatever is selected now
    (iterators it returns, e.g. streamed text, too)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with using(self.backend):
            out = method(self, *args, **kwargs)
        if isinstance(out, Iterator):
            return _iterate_on(self.backend, out)
        return out

    return wrapper


class Task:
    """Base class of task models; use a subclass such as `zoohub.Backbone`.

    >>> import zoohub
    >>> zoohub.TextClassifier.TASK, zoohub.CausalLM.TASK
    ('text_classifier', 'causal_lm')
    """

    TASK: ClassVar[str] = "backbone"

    def __init__(self, *, family: Family, config, params: dict, tokenizer: Tokenizer | None = None,
                 aux_files: dict[str, bytes] | None = None, metadata: dict | None = None,
                 report: LoadReport | None = None):
        self.family = family
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.aux_files = dict(aux_files or {})
        self.metadata = dict(metadata or {})
        self.load_report = report or LoadReport()
        self.backend = get_backend()
        self.mesh = None  # a jax.sharding.Mesh when loaded with mesh=
        self.sharding = "tensor"  # how params lie on the mesh (zoohub.backbones.layout.SHARDINGS)
        self._compiled: dict[str, Any] = {}

    @property
    def head(self) -> Head | None:
        return None if self.TASK == "backbone" else self.family.heads[self.TASK]

    def _outputs(self, params, inputs, rng=None, **forward_options):
        """The pure function of the task: backbone hidden states, through the head when there is one.

        The compiled forward and the training loss both call it; a task whose math differs overrides it.
        `forward_options` go to the family's forward (the training loss passes `aux=` to a family with
        an auxiliary loss)."""
        if self.head is None:
            return self.family.forward(params, self.config, inputs, rng=rng, **forward_options)
        hidden = self.family.forward(self.family.backbone_params(params), self.config, inputs, rng=rng, **forward_options)
        return self.head(params, self.config, hidden, inputs, rng=rng)

    # ---- loading ---------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, handle: str | os.PathLike, *, revision: str | None = None,
                    dtype: str | None = None, seed: int = 0, gguf_file: str | None = None, **options):
        """Load from a registry name, a hub handle, a local folder or a GGUF file (`path/model.gguf`, or
        `gguf_file=` naming one in a folder or hub repo). See the subclass docs."""
        text = os.fspath(handle)
        if gguf_file is None and text.endswith(".gguf") and Path(text).expanduser().is_file():
            return cls.from_gguf(Path(text).expanduser(), dtype=dtype, seed=seed, source=text, **options)
        folder = resolve_preset(handle, revision=revision, gguf_file=gguf_file)
        path = find_gguf(folder, gguf_file)
        if path is not None:
            return cls.from_gguf(path, dtype=dtype, seed=seed, source=text, **options)
        return cls.from_folder(folder, dtype=dtype, seed=seed, source=text, **options)

    @classmethod
    def from_folder(cls, folder: Path, *, dtype: str | None = None, seed: int = 0, source: str | None = None,
                    num_labels: int | None = None, mesh=None, sharding: str = "tensor", **options):
        folder = Path(folder)
        if sharding not in SHARDINGS or (sharding != "tensor" and mesh is None):
            raise InputError(f"sharding={sharding!r}: expected one of {SHARDINGS}, and a mesh= to lay the params on")
        hf = read_config(folder)
        family = get_family(hf["model_type"])
        hf = cls._adjust_config(hf, num_labels=num_labels, **options)
        config = family.config_class.from_hf(hf)
        head = cls._head_of(family)
        flat, report = load_params(read_weights(folder), family, config, head,
                                   num_labels=cls._num_labels(hf, num_labels), seed=seed, where=str(folder))
        aux = read_aux_files(folder, AUX_FILES)  # checked to stay inside the folder, regular files only
        has_tokenizer = any(n in aux for n in ("tokenizer.json", "vocab.txt", "vocab.json"))
        meta = read_json(folder, ZOOHUB_FILE) or {}
        meta.pop("files", None)
        meta["source"] = source or str(folder)
        task = cls(family=family, config=config, params=to_backend(flat, family, head, dtype, mesh, sharding),
                   tokenizer=Tokenizer.from_folder(folder) if has_tokenizer else None,
                   aux_files=aux, metadata=meta, report=report)
        task.mesh, task.sharding = mesh, sharding
        task._configure(**options)
        return task

    @classmethod
    def from_gguf(cls, path: Path, *, dtype: str | None = None, seed: int = 0, source: str | None = None,
                  num_labels: int | None = None, mesh=None, **options):
        """Load a llama.cpp GGUF file: config from its metadata, tokenizer from its vocabulary, tensors
        dequantized one at a time into float32 (or `dtype`); see `zoohub.presets.gguf`."""
        from zoohub.presets.gguf import GGUFFile

        file = GGUFFile(path)
        hf = file.config()
        family = get_family(hf["model_type"])
        hf = cls._adjust_config(dict(hf), num_labels=num_labels, **options)
        config = family.config_class.from_hf(hf)
        head = cls._head_of(family)
        names = [f"{family.root(head)}{k}" for k in {**family.shapes(config), **family.optional_shapes(config)}]
        names += list(head.shapes(config, num_labels or 0)) if head is not None else []
        flat, report = load_params(file.tensors(names), family, config, head, num_labels=cls._num_labels(hf, num_labels),
                                   seed=seed, where=str(path))
        backend, tokenizer_config = file.tokenizer()
        meta = {"source": source or str(path), "gguf": {"file": Path(path).name, "types": file.quantization_types()}}
        task = cls(family=family, config=config, params=to_backend(flat, family, head, dtype, mesh),
                   tokenizer=Tokenizer(backend, tokenizer_config), metadata=meta, report=report)
        task.mesh = mesh
        task._configure(**options)
        return task

    @classmethod
    def _head_of(cls, family: Family) -> Head | None:
        if cls.TASK == "backbone":
            return None
        if cls.TASK not in family.heads:
            raise UnsupportedArchitectureError(
                f"{family.model_type} has no {cls.TASK} head; it supports: backbone, {', '.join(family.heads)}")
        return family.heads[cls.TASK]

    @classmethod
    def _adjust_config(cls, hf: dict, **options) -> dict:
        """Subclasses change config.json before parsing (e.g. id2label for a new head)."""
        return hf

    @classmethod
    def _num_labels(cls, hf: dict, num_labels: int | None) -> int | None:
        return num_labels

    def _configure(self, **options) -> None:
        """Subclasses take their own from_preset options here."""
        if options:
            raise TypeError(f"{type(self).__name__}.from_preset got unexpected options: {sorted(options)}")

    # ---- training (implemented in zoohub.tasks.training; jax only) ---------------------------
    @on_own_backend
    def fit(self, *args, **kwargs):
        """Fine-tune in place on the jax backend; see `zoohub.tasks.training.fit`."""
        ops(self.backend).require_training("fit")
        from zoohub.tasks.training import fit

        return fit(self, *args, **kwargs)

    @on_own_backend
    def evaluate(self, *args, **kwargs) -> dict:
        """Loss and metrics on labelled data; see `zoohub.tasks.training.evaluate`."""
        from zoohub.tasks.training import evaluate

        return evaluate(self, *args, **kwargs)

    # ---- LoRA (implemented in zoohub.tasks.lora) -----------------------------------------------
    @on_own_backend
    def enable_lora(self, rank: int = 8, alpha: float = 16, targets=None, seed: int = 0) -> list[str]:
        """Add LoRA adapters (only they train from now on); see `zoohub.tasks.lora.enable_lora`."""
        from zoohub.tasks.lora import enable_lora

        return enable_lora(self, rank=rank, alpha=alpha, targets=targets, seed=seed)

    @on_own_backend
    def save_lora(self, path: str | os.PathLike) -> Path:
        """Write the adapters in PEFT's format; see `zoohub.tasks.lora.save_lora`."""
        from zoohub.tasks.lora import save_lora

        return save_lora(self, path)

    @on_own_backend
    def load_lora(self, path: str | os.PathLike) -> list[str]:
        """Read a PEFT LoRA adapter onto this model; see `zoohub.tasks.lora.load_lora`."""
        from zoohub.tasks.lora import load_lora

        return load_lora(self, path)

    @on_own_backend
    def merge_lora(self) -> None:
        """Fold the adapters into the base weights, in place."""
        from zoohub.tasks.lora import merge_lora

        merge_lora(self)

    # ---- saving ----------------------------------------------------------------------------
    @property
    def architecture(self) -> str:
        return self.family.base_architecture if self.head is None else self.head.architecture

    def hf_config(self) -> dict:
        """config.json as transformers writes it for this task's class."""
        out = self.config.to_hf()
        out.pop("torch_dtype", None)
        out["architectures"] = [self.architecture]
        out["dtype"] = dtype_name(self.params)
        return out

    def num_params(self) -> int:
        """Parameter count (tied tensors once)."""
        return int(sum(np.prod(v.shape) for k, v in flatten(self.params).items() if ".lora_" not in k))

    def preprocessing_metadata(self) -> dict:
        return {}

    def tensors_to_save(self) -> dict[str, np.ndarray]:
        from zoohub.tasks.lora import merged_tensors  # LoRA adapters are folded in: a plain checkpoint

        return merged_tensors(self)

    @on_own_backend
    def save_to_preset(self, path: str | os.PathLike, *, max_shard_bytes: int = 5 * 2**30) -> Path:
        """Save as a transformers checkpoint plus zoohub.json, atomically.

        `transformers.AutoModel...from_pretrained(path)` loads the result. In a multi-process run
        (`zoohub.distributed`) every process calls this; process 0 writes, the others wait for it."""
        import json

        from zoohub.backend.distributed import write_once

        # Every process takes part in gathering shards held by other processes; then only process 0 writes.
        tensors = self.tensors_to_save()

        def fill(tmp: Path) -> None:
            (tmp / "config.json").write_text(json.dumps(self.hf_config(), indent=2, sort_keys=True) + "\n")
            write_weights(tensors, tmp, max_shard_bytes=max_shard_bytes)
            for name, data in self.aux_files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            if self.tokenizer is not None and "tokenizer.json" not in self.aux_files:
                self.tokenizer.save(tmp)

        meta = {k: v for k, v in self.metadata.items() if k not in ("source", "saved_at", "zoohub_version")}
        meta.update({
            "task": self.TASK,
            "architecture": self.architecture,
            "num_params": self.num_params(),
            "preprocessing": self.preprocessing_metadata(),
        })
        if self.metadata.get("source"):
            meta.setdefault("base_model", self.metadata["source"])
        meta.setdefault("preset_name", Path(path).name)
        saved = write_once(lambda: save_preset_folder(Path(path), fill, metadata=meta), f"the preset {path}")
        return saved or Path(path).expanduser().absolute()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.family.model_type}, {self.num_params():,} params, "
                f"backend={self.backend})")


__all__ = ["Task", "to_backend", "checkpoint_tensors"]
