"""Training checkpoints: a preset per epoch plus the optimizer state, step and history.

Layout of `checkpoint_dir`:

    epoch-0001/            a complete preset (task.save_to_preset, atomic; LoRA merged)
    epoch-0001.state/      optimizer.safetensors, trainable.safetensors (tensors the preset does not
                           hold exactly: LoRA adapters, float32 masters of bf16 weights), state.json
    latest.json            {"epoch": 1, "preset": "epoch-0001", "state": "epoch-0001.state"}

`latest.json` is replaced (os.replace) only after both folders are complete, so a process killed
mid-write leaves the previous checkpoint as the one `resume=True` reads. No pickle anywhere:
tensors are safetensors, the rest JSON. In a multi-process run every process gathers, process 0 alone
writes; resuming, each process reads (memory-mapped) only the shards its devices hold.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from zoohub.backbones.layout import to_layout
from zoohub.backend.distributed import gather, write_once
from zoohub.errors import CorruptFileError, InputError
from zoohub.presets.folder import write_folder
from zoohub.presets.weights import read_safetensors, read_weights

LATEST = "latest.json"


def _leaves_with_names(tree) -> tuple[list[str], list, object]:
    import jax

    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(path) for path, _ in flat], [leaf for _, leaf in flat], treedef


def save_checkpoint(folder: Path, *, epoch: int, task, trainable: dict, opt_state, state: dict) -> Path:
    """Write epoch `epoch`'s preset and training state, then point latest.json at them."""
    folder = Path(folder)
    name = f"epoch-{epoch:04d}"
    task.save_to_preset(folder / name)  # in a multi-process run: all gather, process 0 writes
    # np.array copies (the step donates these buffers) to C-contiguous arrays, and keeps 0-d leaves 0-d
    # (ascontiguousarray would not); gather assembles shards other processes hold (every process calls it).
    host = {k: np.array(gather(v)) for k, v in trainable.items()}
    names, leaves, _ = _leaves_with_names(opt_state)
    optimizer = {f"{i:06d}": np.array(gather(leaf)) for i, leaf in enumerate(leaves)}

    def write() -> Path:
        saved = _preset_tensors(folder / name, task)
        # Tensors the preset already holds bit for bit are not stored twice.
        extra = {k: v for k, v in host.items()
                 if k not in saved or saved[k].dtype != v.dtype or not np.array_equal(saved[k], v)}

        def fill(tmp: Path) -> None:
            save_file(optimizer, str(tmp / "optimizer.safetensors"))
            save_file(extra, str(tmp / "trainable.safetensors"))
            record = {**state, "epoch": epoch, "optimizer_leaves": names,
                      "trainable": {k: list(v.shape) for k, v in host.items()}}
            (tmp / "state.json").write_text(json.dumps(record, indent=2) + "\n")

        write_folder(folder / f"{name}.state", fill)
        # Both folders are complete: only now does latest.json move to them (os.replace is atomic).
        for stale in folder.glob(f".{LATEST}.tmp-*"):  # a killed earlier run's pointer (one writer per folder)
            stale.unlink(missing_ok=True)
        pointer = folder / f".{LATEST}.tmp-{uuid.uuid4().hex[:8]}"
        pointer.write_text(json.dumps({"epoch": epoch, "preset": name, "state": f"{name}.state"}) + "\n")
        os.replace(pointer, folder / LATEST)
        return folder / name

    return write_once(write, f"the checkpoint {folder / name}") or folder / name


def _preset_tensors(folder: Path, task) -> dict:
    """A saved preset's tensors in the task's param layout (experts and layers stacked on access), so that
    tensors the preset holds compare equal to the trained ones and are not stored a second time."""
    return to_layout(read_weights(folder), task.family, task.head)


def load_checkpoint(folder: Path, *, task, trainable: dict, opt_state) -> tuple[dict, object, dict] | None:
    """(trainable params, optimizer state, state.json) of the latest checkpoint, or None if there is none.

    `trainable` and `opt_state` are freshly initialised ones: they give the expected names, shapes
    and tree structure, which the checkpoint must match."""
    import jax
    import jax.numpy as jnp

    from zoohub.backend.sharding import put_like

    folder = Path(folder)
    if not (folder / LATEST).is_file():
        return None
    try:
        latest = json.loads((folder / LATEST).read_text())
        state = json.loads((folder / latest["state"] / "state.json").read_text())
    except (ValueError, KeyError, OSError) as e:
        raise CorruptFileError(f"{folder}: the checkpoint pointer or its state.json cannot be read ({e})") from None
    expected = {k: list(v.shape) for k, v in trainable.items()}
    if state["trainable"] != expected:
        diff = sorted(set(state["trainable"]) ^ set(expected))[:3] or [
            k for k in expected if state["trainable"].get(k) != expected[k]][:3]
        raise InputError(f"{folder}: the checkpoint trained different parameters than this task has "
                         f"(first differences: {diff}); was LoRA enabled the same way?")
    preset = _preset_tensors(folder / latest["preset"], task)
    # Memory-mapped, and each tensor placed as the fresh one lies (its sharding): a process copies
    # only the shards its own devices hold.
    extra = read_safetensors(folder / latest["state"], "trainable.safetensors")
    params = {}
    for k, v in trainable.items():
        source = extra.get(k, preset.get(k))
        if source is None:
            raise CorruptFileError(f"{folder}: tensor {k!r} is in neither the preset nor trainable.safetensors")
        params[k] = put_like(source, v)
    names, leaves, treedef = _leaves_with_names(opt_state)
    if names != state["optimizer_leaves"]:
        raise InputError(f"{folder}: the optimizer state was written by a different optimizer setup "
                         "(optimizer, grad_accumulation or clipping changed); resume with the same fit arguments")
    stored = read_safetensors(folder / latest["state"], "optimizer.safetensors")
    restored = []
    for i, leaf in enumerate(leaves):
        value = stored[f"{i:06d}"]
        if tuple(value.shape) != tuple(np.shape(leaf)):
            raise CorruptFileError(f"{folder}: optimizer leaf {names[i]} has shape {value.shape}, expected {np.shape(leaf)}")
        restored.append(put_like(value, jnp.asarray(leaf)))
    return params, jax.tree_util.tree_unflatten(treedef, restored), state
