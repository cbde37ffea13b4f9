"""LoRA: low-rank adapters beside chosen linear weights, in PEFT's names and file format.

`enable_lora` inserts `lora_A.weight` [r, in], `lora_B.weight` [out, r] (zeros, so the model is
unchanged until trained) and a 0-d `lora_scaling` = alpha / r into each targeted linear's param dict
(stacked layers carry a leading layer axis on all three; a layer left out has scaling 0);
`zoohub.layers.linear` applies them and `fit` then trains only them. `save_lora` writes the PEFT
adapter folder (`adapter_config.json` + `adapter_model.safetensors`, tensors named
`base_model.model.<module>.lora_A.weight`) that `peft.PeftModel.from_pretrained` loads onto the
transformers model; `load_lora` reads one back; `merge_lora` folds W += scaling * B @ A.

    >>> import tempfile, zoohub
    >>> clf = zoohub.TextClassifier.from_preset("starter_bert_tiny_en")   # the bundled toy BERT
    >>> for name in clf.enable_lora(rank=4): print(name)   # the linears it targets (B = 0: nothing changes yet)
    bert.encoder.layer.0.attention.self.query
    bert.encoder.layer.0.attention.self.value
    bert.encoder.layer.1.attention.self.query
    bert.encoder.layer.1.attention.self.value

`clf.fit(texts, labels)` now trains only the adapters and the head (see `zoohub.tasks.training.fit`).

    >>> out = tempfile.mkdtemp()
    >>> adapter = clf.save_lora(out + "/adapter")     # peft.PeftModel.from_pretrained(model, adapter) loads it
    >>> sorted(p.name for p in adapter.iterdir())
    ['adapter_config.json', 'adapter_model.safetensors', 'zoohub.json']
    >>> base = zoohub.TextClassifier.from_preset("starter_bert_tiny_en")
    >>> len(base.load_lora(adapter))
    4
    >>> merged = base.save_to_preset(out + "/merged")  # a plain transformers checkpoint, LoRA merged
    >>> from zoohub.presets.weights import read_weights
    >>> any(".lora_" in name for name in read_weights(merged))
    False
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoohub.backbones.layout import first_layer, is_stacked, layer_name, to_layout
from zoohub.backend import ops
from zoohub.errors import CorruptFileError, InputError, MissingFileError, UnsupportedConfigError
from zoohub.hub import confine
from zoohub.presets.weights import flatten, read_safetensors, unflatten
from zoohub.tasks.base import checkpoint_tensors

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

_TASK_TYPES = {"text_classifier": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "masked_lm": None,
               "image_classifier": None, "backbone": "FEATURE_EXTRACTION", "text_embedder": "FEATURE_EXTRACTION"}


def in_modules(name: str, modules) -> bool:
    """Whether tensor `name` belongs to a module whose name ends with one of `modules`: PEFT's
    `modules_to_save` rule, a plain suffix (so "classifier" takes DistilBERT's `pre_classifier` too)."""
    parts = name.split(".")[:-1]
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(p.endswith(m) for p in prefixes for m in modules or ())


def lora_modules(params) -> list[str]:
    """Paths of the linears that carry an adapter (in the task's param layout)."""
    return sorted(k[: -len(".lora_A.weight")] for k in flatten(params) if k.endswith(".lora_A.weight"))


def _layers(task) -> str | None:
    return task.family.layers_path(task.head)


def linear_modules(task) -> list[str]:
    """Paths of the param dicts that are linear layers (a matrix `weight`, per layer)."""
    layers = _layers(task)
    return sorted(k[: -len(".weight")] for k, v in flatten(task.params).items()
                  if k.endswith(".weight") and ".lora_" not in k and len(v.shape) == 2 + is_stacked(k, layers))


def module_layers(task, path: str, flat: dict) -> list[tuple[int | None, str]]:
    """(layer index, checkpoint module name) of each linear that the param `path` holds: one per
    layer for stacked layers, (None, path) otherwise."""
    layers = _layers(task)
    if not is_stacked(path, layers):
        return [(None, path)]
    count = flat[path + ".weight"].shape[0]
    total = max(v.shape[0] for k, v in flat.items() if is_stacked(k, layers) and k.endswith(".weight"))
    first = first_layer(path, count, total, task.family.trailing_layers)  # a module of the last layers only
    return [(i, layer_name(path, layers, first + i)) for i in range(count)]


def _matches(name: str, targets) -> bool:
    if isinstance(targets, str):  # PEFT: a string is a regex over the whole module name
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _dims(task, weight) -> tuple[int, int]:
    """(out, in) of a linear weight [..., out, in] (or [..., in, out] for Conv1D layouts)."""
    a, b = weight.shape[-2:]
    return (b, a) if task.family.weight_layout == "in_out" else (a, b)


def enable_lora(task, rank: int = 8, alpha: float = 16, targets: Sequence[str] | str | None = None,
                seed: int = 0) -> list[str]:
    """Add zero-initialised adapters to the targeted linears; returns their checkpoint names.

    `targets`: module-name suffixes (PEFT's `target_modules`; default: the family's, usually the
    attention query/value projections) or a regex string matched against the full module name."""
    if rank < 1:
        raise InputError(f"rank must be >= 1, got {rank}")
    if lora_modules(task.params):
        raise InputError("LoRA is already enabled on this task; merge_lora() first, or load_lora() to replace it")
    if targets is None:
        if not task.family.lora_targets:
            raise InputError(f"no default LoRA targets for {task.family.model_type}; pass targets=[...]")
        targets = task.family.lora_targets
    rng = np.random.default_rng(seed)
    o = ops(task.backend)
    flat = flatten(task.params)
    chosen = []
    for path in linear_modules(task):
        layers = module_layers(task, path, flat)
        hits = np.array([_matches(name, targets) for _, name in layers])
        if not hits.any():
            continue
        chosen += [name for (_, name), hit in zip(layers, hits) if hit]
        w = flat[path + ".weight"]
        lead = tuple(w.shape[:-2])
        out_dim, in_dim = _dims(task, w)
        # PEFT's init: A ~ kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(in)), B = 0.
        bound = 1.0 / math.sqrt(in_dim)
        flat[path + ".lora_A.weight"] = o.asarray(rng.uniform(-bound, bound, lead + (rank, in_dim)).astype(w.dtype))
        flat[path + ".lora_B.weight"] = o.asarray(np.zeros(lead + (out_dim, rank), w.dtype))
        flat[path + ".lora_scaling"] = o.asarray(np.where(hits, alpha / rank, 0.0).astype(np.float32).reshape(lead))
    if not chosen:
        names = sorted({p.rsplit(".", 1)[-1] for p in linear_modules(task)})
        raise InputError(f"LoRA targets {targets!r} match no linear layer; this model's linear names: {names}")
    task.params = unflatten(flat)
    task.lora_config = {"r": int(rank), "lora_alpha": alpha,
                        "target_modules": targets if isinstance(targets, str) else sorted(set(targets)),
                        "modules_to_save": _head_modules(task)}
    return chosen


def _head_modules(task) -> list[str] | None:
    """The head's modules that train beside the adapters (the family declares them on its Head)."""
    return list(task.head.trained_with_lora) if task.head is not None and task.head.trained_with_lora else None


def merged_tensors(task) -> dict[str, np.ndarray]:
    """Host tensors under the checkpoint's names with every adapter folded in (W + scaling * B @ A)
    and no LoRA leaves."""
    flat = {k: ops(task.backend).to_numpy(v) for k, v in flatten(task.params).items()}
    for path in lora_modules(task.params):
        a = flat.pop(path + ".lora_A.weight").astype(np.float32)
        b = flat.pop(path + ".lora_B.weight").astype(np.float32)
        scaling = np.asarray(flat.pop(path + ".lora_scaling"), np.float32)[..., None, None]
        w = flat[path + ".weight"]
        delta = (b @ a) * scaling
        if task.family.weight_layout == "in_out":
            delta = np.swapaxes(delta, -1, -2)
        flat[path + ".weight"] = (w.astype(np.float32) + delta).astype(w.dtype)
    return checkpoint_tensors(task, flat)


def merge_lora(task) -> None:
    """Fold the adapters into the base weights, in place; the task is a plain model again."""
    o = ops(task.backend)
    merged = to_layout(merged_tensors(task), task.family, task.head)
    task.params = unflatten({k: o.asarray(np.asarray(v)) for k, v in merged.items()})
    task.__dict__.pop("lora_config", None)


def _runtime_name(task, path: str) -> str:
    for pattern, repl in task.family.peft_names:
        path = re.sub(pattern, repl, path)
    return path


def _adapted_layers(task, flat: dict) -> list[tuple[str, int | None, str]]:
    """(param path, layer index, checkpoint module name) of every adapted linear (scaling != 0)."""
    out = []
    for path in lora_modules(task.params):
        scaling = np.asarray(ops(task.backend).to_numpy(flat[path + ".lora_scaling"]))
        for index, name in module_layers(task, path, flat):
            if (scaling if index is None else scaling[index]) != 0:
                out.append((path, index, name))
    return out


def save_lora(task, path: str | os.PathLike) -> Path:
    """Write the adapters as a PEFT LoRA adapter folder (atomically); returns the folder."""
    from zoohub.presets.folder import save_preset_folder

    flat = flatten(task.params)
    adapted = _adapted_layers(task, flat)
    if not adapted:
        raise InputError("this task has no LoRA adapters; call enable_lora() (and fit) first")
    o = ops(task.backend)
    settings = getattr(task, "lora_config", None) or {}
    first_path, first_index, _ = adapted[0]
    rank = int(flat[first_path + ".lora_A.weight"].shape[-2])
    scaling = np.asarray(o.to_numpy(flat[first_path + ".lora_scaling"]))
    alpha = float(scaling if first_index is None else scaling[first_index]) * rank
    # PEFT matches module-name suffixes; name the run-time modules the adapters sit on.
    targets = settings.get("target_modules")
    if not isinstance(targets, str):
        targets = sorted({_runtime_name(task, name).rsplit(".", 1)[-1] for _, _, name in adapted})
    tensors = {}
    for module, index, name in adapted:
        for part in ("lora_A", "lora_B"):
            value = o.to_numpy(flat[f"{module}.{part}.weight"])
            value = value if index is None else value[index]
            tensors[f"{PEFT_PREFIX}{_runtime_name(task, name)}.{part}.weight"] = np.ascontiguousarray(value)
    heads = settings.get("modules_to_save") or []
    for k, v in flat.items():
        if in_modules(k, heads) and ".lora_" not in k:
            tensors[PEFT_PREFIX + k] = np.ascontiguousarray(o.to_numpy(v))
    config = {
        "peft_type": "LORA", "task_type": _TASK_TYPES.get(task.TASK),
        "base_model_name_or_path": task.metadata.get("base_model") or task.metadata.get("source"),
        "r": rank, "lora_alpha": alpha if not float(alpha).is_integer() else int(alpha),
        "target_modules": targets, "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": task.family.weight_layout == "in_out", "inference_mode": True, "init_lora_weights": True,
        "modules_to_save": heads or None, "use_rslora": False, "use_dora": False, "layers_to_transform": None,
        "rank_pattern": {}, "alpha_pattern": {}, "revision": None,
    }

    def fill(tmp: Path) -> None:
        from safetensors.numpy import save_file

        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})

    return save_preset_folder(Path(path), fill, metadata={"task": "lora_adapter", "base_model": config["base_model_name_or_path"]})


def load_lora(task, path: str | os.PathLike) -> list[str]:
    """Read a PEFT LoRA adapter folder onto this task (replacing any adapters); returns the adapted paths."""
    folder = Path(path)
    # Adapter files are untrusted like preset files: regular files inside the folder, checked before opening.
    if not confine.is_file(folder, ADAPTER_CONFIG) or not confine.is_file(folder, ADAPTER_WEIGHTS):
        raise MissingFileError(f"{folder} is not a PEFT adapter folder: expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    try:
        config = json.loads(confine.read_bytes(folder, ADAPTER_CONFIG))
    except ValueError as e:
        raise CorruptFileError(f"{folder / ADAPTER_CONFIG}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CorruptFileError(f"{folder / ADAPTER_CONFIG}: expected a JSON object")
    if config.get("peft_type") != "LORA":
        raise UnsupportedConfigError(f"{folder}: peft_type is {config.get('peft_type')!r}; only LORA adapters load")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise UnsupportedConfigError(f"{folder}: {key} (per-module ranks) is not supported")
    if config.get("use_dora"):
        raise UnsupportedConfigError(f"{folder}: DoRA adapters are not supported")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    flat = {k: v for k, v in flatten(task.params).items() if ".lora_" not in k}
    # run-time module name -> (param path, layer index) of every linear this model has
    by_runtime = {_runtime_name(task, name): (path, index)
                  for path in linear_modules(task) for index, name in module_layers(task, path, flat)}
    o = ops(task.backend)
    found: dict[str, dict[int | None, dict]] = {}
    heads = config.get("modules_to_save") or []
    for name, value in read_safetensors(folder, ADAPTER_WEIGHTS).items():
        plain = name[len(PEFT_PREFIX):] if name.startswith(PEFT_PREFIX) else name
        plain = re.sub(r"\.modules_to_save(\.default)?\.", ".", plain)
        if in_modules(plain, heads) and plain in flat:  # a trained head (PEFT modules_to_save)
            if tuple(value.shape) != tuple(flat[plain].shape):
                raise InputError(f"{folder}: {plain} has shape {value.shape}, this model's is {tuple(flat[plain].shape)}")
            flat[plain] = o.asarray(value.astype(flat[plain].dtype))
            continue
        match = re.fullmatch(re.escape(PEFT_PREFIX) + r"(.+)\.(lora_A|lora_B)(?:\.default)?\.weight", name)
        if match is None:
            raise UnsupportedConfigError(f"{folder}: tensor {name!r} is not a LoRA A/B weight (modules_to_save "
                                         "and bias training are not supported)")
        if match.group(1) not in by_runtime:
            raise InputError(f"{folder}: adapter for {match.group(1)!r}, which this "
                             f"{task.family.model_type} model does not have")
        path, index = by_runtime[match.group(1)]
        found.setdefault(path, {}).setdefault(index, {})[match.group(2)] = value
    names = []
    for path, by_layer in found.items():
        w = flat[path + ".weight"]
        out_dim, in_dim = _dims(task, w)
        layers = module_layers(task, path, flat)
        a_all = np.zeros((len(layers), r, in_dim), np.float32)
        b_all = np.zeros((len(layers), out_dim, r), np.float32)
        scale = np.zeros(len(layers), np.float32)
        for row, (index, name) in enumerate(layers):
            if index not in by_layer:
                continue  # a layer the adapter leaves alone: scaling 0
            a, b = by_layer[index].get("lora_A"), by_layer[index].get("lora_B")
            if a is None or b is None or a.shape != (r, in_dim) or b.shape != (out_dim, r):
                raise InputError(f"{folder}: adapter of {name} has shapes {getattr(a, 'shape', None)}, "
                                 f"{getattr(b, 'shape', None)}; expected ({r}, {in_dim}) and ({out_dim}, {r})")
            a_all[row], b_all[row], scale[row] = a, b, scaling
            names.append(name)
        lead = tuple(w.shape[:-2])
        flat[path + ".lora_A.weight"] = o.asarray(a_all.reshape(lead + (r, in_dim)).astype(w.dtype))
        flat[path + ".lora_B.weight"] = o.asarray(b_all.reshape(lead + (out_dim, r)).astype(w.dtype))
        flat[path + ".lora_scaling"] = o.asarray(scale.reshape(lead))
    task.params = unflatten(flat)
    task.lora_config = {"r": r, "lora_alpha": config["lora_alpha"], "target_modules": config.get("target_modules"),
                        "modules_to_save": heads or None}
    return sorted(names)
