"""LoRA: low-rank adapters beside chosen linear weights, in PEFT's names and file format.

`enable_lora` inserts `lora_A.weight` [r, in], `lora_B.weight` [out, r] (zeros, so the model is
unchanged until trained) and a 0-d `lora_scaling` = alpha / r into each targeted linear's param dict;
`zoohub.layers.linear` applies them and `fit` then trains only them. `save_lora` writes the PEFT
adapter folder (`adapter_config.json` + `adapter_model.safetensors`, tensors named
`base_model.model.<module>.lora_A.weight`) that `peft.PeftModel.from_pretrained` loads onto the
transformers model; `load_lora` reads one back; `merge_lora` folds W += scaling * B @ A.

    >>> clf.enable_lora(rank=8)          # only adapters train now          # doctest: +SKIP
    >>> clf.fit(texts, labels)                                                # doctest: +SKIP
    >>> clf.save_lora("adapter/")        # peft.PeftModel.from_pretrained(model, "adapter/")  # doctest: +SKIP
    >>> clf.save_to_preset("merged/")    # a plain transformers checkpoint, LoRA merged      # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from zoohub.backend import ops
from zoohub.errors import InputError, MissingFileError, UnsupportedConfigError
from zoohub.presets.weights import flatten, unflatten

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

# Default targets: the attention query and value projections of each family (PEFT's defaults too).
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"), "roberta": ("query", "value"), "xlm-roberta": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "llama": ("q_proj", "v_proj"), "mistral": ("q_proj", "v_proj"), "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"), "gemma": ("q_proj", "v_proj"), "gemma2": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "gpt2": ("c_attn",),
    "vit": ("query", "value"),
}
# GPT-2's Conv1D stores weights [in, out]; PEFT calls that fan_in_fan_out.
IN_OUT_FAMILIES = frozenset({"gpt2"})
# transformers 5 renames some modules at run time while files keep the old names; PEFT names
# adapters by the run-time module. (file pattern, run-time name) per family, applied in order.
RUNTIME_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "vit": ((r"\.encoder\.layer\.", ".layers."), (r"\.attention\.attention\.query$", ".attention.q_proj"),
            (r"\.attention\.attention\.key$", ".attention.k_proj"),
            (r"\.attention\.attention\.value$", ".attention.v_proj"),
            (r"\.attention\.output\.dense$", ".attention.o_proj"), (r"\.intermediate\.dense$", ".mlp.fc1"),
            (r"\.output\.dense$", ".mlp.fc2")),
}
# Classifier heads train beside the adapters and are saved in the adapter file, as PEFT's
# `modules_to_save` (for SEQ_CLS it adds "classifier" and "score" by itself).
HEAD_MODULES = {"text_classifier": ("classifier", "score"), "image_classifier": ("classifier",)}
_TASK_TYPES = {"text_classifier": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "masked_lm": None,
               "image_classifier": None, "backbone": "FEATURE_EXTRACTION", "text_embedder": "FEATURE_EXTRACTION"}


def in_modules(name: str, modules) -> bool:
    """Whether tensor `name` belongs to one of `modules` (PEFT's module-name suffix match)."""
    return any(f".{name}".find(f".{m}.") >= 0 for m in modules or ())


def lora_modules(params) -> list[str]:
    """Paths of the linears that carry an adapter."""
    return sorted(k[: -len(".lora_A.weight")] for k in flatten(params) if k.endswith(".lora_A.weight"))


def linear_modules(params) -> list[str]:
    """Paths of the param dicts that look like linear layers (a 2-D `weight`)."""
    return sorted(k[: -len(".weight")] for k, v in flatten(params).items()
                  if k.endswith(".weight") and len(v.shape) == 2 and ".lora_" not in k)


def _matches(path: str, targets) -> bool:
    if isinstance(targets, str):  # PEFT: a string is a regex over the whole module name
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def enable_lora(task, rank: int = 8, alpha: float = 16, targets: Sequence[str] | str | None = None,
                seed: int = 0) -> list[str]:
    """Add zero-initialised adapters to the targeted linears; returns their paths.

    `targets`: module-name suffixes (PEFT's `target_modules`; default per family: the attention
    query/value projections) or a regex string matched against the full module path."""
    if rank < 1:
        raise InputError(f"rank must be >= 1, got {rank}")
    if lora_modules(task.params):
        raise InputError("LoRA is already enabled on this task; merge_lora() first, or load_lora() to replace it")
    model_type = task.family.model_type
    if targets is None:
        if model_type not in DEFAULT_TARGETS:
            raise InputError(f"no default LoRA targets for {model_type}; pass targets=[...]")
        targets = DEFAULT_TARGETS[model_type]
    candidates = linear_modules(task.params)
    chosen = [p for p in candidates if _matches(p, targets)]
    if not chosen:
        names = sorted({p.rsplit(".", 1)[-1] for p in candidates})
        raise InputError(f"LoRA targets {targets!r} match no linear layer; this model's linear names: {names}")
    rng = np.random.default_rng(seed)
    o = ops(task.backend)
    flat = flatten(task.params)
    for path in chosen:
        w = flat[path + ".weight"]
        out_dim, in_dim = (w.shape[1], w.shape[0]) if model_type in IN_OUT_FAMILIES else w.shape
        # PEFT's init: A ~ kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(in)), B = 0.
        bound = 1.0 / math.sqrt(in_dim)
        flat[path + ".lora_A.weight"] = o.asarray(rng.uniform(-bound, bound, (rank, in_dim)).astype(w.dtype))
        flat[path + ".lora_B.weight"] = o.asarray(np.zeros((out_dim, rank), w.dtype))
        flat[path + ".lora_scaling"] = o.asarray(np.asarray(alpha / rank, np.float32))
    task.params = unflatten(flat)
    task.lora_config = {"r": int(rank), "lora_alpha": alpha,
                        "target_modules": targets if isinstance(targets, str) else sorted(set(targets)),
                        "modules_to_save": _head_modules(task)}
    return chosen


def _head_modules(task) -> list[str] | None:
    roots = {k.split(".")[0] for k in flatten(task.params)}
    return [m for m in HEAD_MODULES.get(task.TASK, ()) if m in roots] or None


def merged_tensors(task) -> dict[str, np.ndarray]:
    """Flat numpy tensors with every adapter folded in (W + scaling * B @ A) and no LoRA leaves."""
    flat = {k: ops(task.backend).to_numpy(v) for k, v in flatten(task.params).items()}
    in_out = task.family.model_type in IN_OUT_FAMILIES
    for path in lora_modules(task.params):
        a = flat.pop(path + ".lora_A.weight").astype(np.float32)
        b = flat.pop(path + ".lora_B.weight").astype(np.float32)
        scaling = np.float32(flat.pop(path + ".lora_scaling"))
        w = flat[path + ".weight"]
        delta = (b @ a) * scaling
        flat[path + ".weight"] = (w.astype(np.float32) + (delta.T if in_out else delta)).astype(w.dtype)
    return flat


def merge_lora(task) -> None:
    """Fold the adapters into the base weights, in place; the task is a plain model again."""
    o = ops(task.backend)
    task.params = unflatten({k: o.asarray(v) for k, v in merged_tensors(task).items()})
    task.__dict__.pop("lora_config", None)


def _runtime_name(model_type: str, path: str) -> str:
    for pattern, repl in RUNTIME_NAMES.get(model_type, ()):
        path = re.sub(pattern, repl, path)
    return path


def save_lora(task, path: str | os.PathLike) -> Path:
    """Write the adapters as a PEFT LoRA adapter folder (atomically); returns the folder."""
    from zoohub.presets.folder import save_preset_folder

    modules = lora_modules(task.params)
    if not modules:
        raise InputError("this task has no LoRA adapters; call enable_lora() (and fit) first")
    flat = flatten(task.params)
    o = ops(task.backend)
    model_type = task.family.model_type
    settings = getattr(task, "lora_config", None) or {}
    rank = int(flat[modules[0] + ".lora_A.weight"].shape[0])
    alpha = float(np.asarray(o.to_numpy(flat[modules[0] + ".lora_scaling"]))) * rank
    # PEFT matches module-name suffixes; name the run-time modules the adapters sit on.
    targets = settings.get("target_modules")
    if not isinstance(targets, str):
        targets = sorted({_runtime_name(model_type, m).rsplit(".", 1)[-1] for m in modules})
    tensors = {}
    for m in modules:
        name = PEFT_PREFIX + _runtime_name(model_type, m)
        for part in ("lora_A", "lora_B"):
            tensors[f"{name}.{part}.weight"] = np.ascontiguousarray(o.to_numpy(flat[f"{m}.{part}.weight"]))
    heads = settings.get("modules_to_save") or []
    for k, v in flat.items():
        if in_modules(k, heads) and ".lora_" not in k:
            tensors[PEFT_PREFIX + k] = np.ascontiguousarray(o.to_numpy(v))
    config = {
        "peft_type": "LORA", "task_type": _TASK_TYPES.get(task.TASK),
        "base_model_name_or_path": task.metadata.get("base_model") or task.metadata.get("source"),
        "r": rank, "lora_alpha": alpha if not float(alpha).is_integer() else int(alpha),
        "target_modules": targets, "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": model_type in IN_OUT_FAMILIES, "inference_mode": True, "init_lora_weights": True,
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
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise MissingFileError(f"{folder} is not a PEFT adapter folder: expected {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise UnsupportedConfigError(f"{folder}: peft_type is {config.get('peft_type')!r}; only LORA adapters load")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise UnsupportedConfigError(f"{folder}: {key} (per-module ranks) is not supported")
    if config.get("use_dora"):
        raise UnsupportedConfigError(f"{folder}: DoRA adapters are not supported")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    model_type = task.family.model_type
    flat = {k: v for k, v in flatten(task.params).items() if ".lora_" not in k}
    by_runtime = {_runtime_name(model_type, m): m for m in linear_modules(task.params)}
    o = ops(task.backend)
    found = {}
    heads = config.get("modules_to_save") or []
    for name, value in load_file(str(folder / ADAPTER_WEIGHTS)).items():
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
        module = by_runtime.get(match.group(1))
        if module is None:
            raise InputError(f"{folder}: adapter for {match.group(1)!r}, which this {model_type} model does not have")
        found.setdefault(module, {})[match.group(2)] = value
    for module, parts in found.items():
        w = flat[module + ".weight"]
        a, b = parts.get("lora_A"), parts.get("lora_B")
        out_dim, in_dim = (w.shape[1], w.shape[0]) if model_type in IN_OUT_FAMILIES else w.shape
        if a is None or b is None or a.shape != (r, in_dim) or b.shape != (out_dim, r):
            raise InputError(f"{folder}: adapter of {module} has shapes {getattr(a, 'shape', None)}, "
                             f"{getattr(b, 'shape', None)}; expected ({r}, {in_dim}) and ({out_dim}, {r})")
        flat[module + ".lora_A.weight"] = o.asarray(a.astype(w.dtype))
        flat[module + ".lora_B.weight"] = o.asarray(b.astype(w.dtype))
        flat[module + ".lora_scaling"] = o.asarray(np.asarray(scaling, np.float32))
    task.params = unflatten(flat)
    task.lora_config = {"r": r, "lora_alpha": config["lora_alpha"], "target_modules": config.get("target_modules"),
                        "modules_to_save": heads or None}
    return sorted(found)
