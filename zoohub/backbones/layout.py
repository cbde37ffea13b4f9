"""Checkpoint names <-> the params layout a task holds.

A checkpoint names every layer's tensors (`model.layers.7.mlp.up_proj.weight`). A family with
`Family.layers` set holds them once, stacked on a leading layer axis (`model.layers.mlp.up_proj.weight`
[L, F, D]): one layout for every call on both backends (`lax.scan` on jax, a loop over views on
numpy). Stacking happens once at load time, tensor by tensor; saving unstacks back to the
checkpoint's names.

    >>> import numpy as np
    >>> flat = {"h.0.w": np.zeros((2, 3)), "h.1.w": np.ones((2, 3)), "wte.weight": np.zeros((5, 2))}
    >>> stacked = {k: np.asarray(v) for k, v in stack_layers(flat, "h").items()}
    >>> stacked["h.w"].shape, sorted(unstack_layers(stacked, "h"))
    ((2, 2, 3), ['h.0.w', 'h.1.w', 'wte.weight'])
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

import numpy as np

from zoohub.backbones.base import Family, Head, init_tensor


class LayerStack:
    """A stacked tensor not yet built: per-layer arrays (memory-mapped views) read slice by slice, so
    a sharded or device copy never needs the whole stacked array on the host at once."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.shape = (len(parts),) + tuple(parts[0].shape)
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        layers = range(len(self.parts))[index[0]] if index else range(len(self.parts))
        rest = index[1:]
        return np.stack([np.asarray(self.parts[i][rest]) for i in layers])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def _stack(flat: Mapping[str, np.ndarray], pattern: re.Pattern, what: str, trailing: bool = False) -> dict:
    """Tensors whose names match `pattern` (groups: head, index, tail) -> one `head.tail` LayerStack each.

    Each tensor's indices run 0..n-1; with `trailing`, a run may instead end at the last index of all
    (a tensor only the last layers have: `Family.trailing_layers`)."""
    out, groups = {}, {}
    for name, value in flat.items():
        match = pattern.match(name)
        if match is None:
            out[name] = value
        else:
            groups.setdefault(f"{match.group(1)}.{match.group(3)}", {})[int(match.group(2))] = value
    last = max((max(parts) for parts in groups.values()), default=0)
    for name, parts in groups.items():
        first = last + 1 - len(parts) if trailing and min(parts) else 0
        if sorted(parts) != list(range(first, first + len(parts))):
            ends = f"{first}..{last}" if first else f"0..{len(parts) - 1}"
            raise ValueError(f"{name}: {what} {sorted(parts)} are not numbered {ends}")
        out[name] = LayerStack([parts[i] for i in sorted(parts)])
    return out


def stack_layers(flat: Mapping[str, np.ndarray], path: str | None) -> dict:
    """`path.{i}.name` tensors -> one `path.name` LayerStack each; other tensors unchanged. A tensor
    that only the last layers have (numbered k..L-1, e.g. DeepSeek-V3's MoE blocks after its dense
    first layers) stacks to [L - k, ...]; `unstack_layers` numbers it back from L - k."""
    if path is None:
        return dict(flat)
    return _stack(flat, re.compile("(" + re.escape(path) + r")\.(\d+)\.(.+)$"), "layers", trailing=True)


def is_stacked(name: str, path: str | None) -> bool:
    return path is not None and name.startswith(path + ".")


def layer_name(name: str, path: str, index: int) -> str:
    """The checkpoint name of layer `index` of stacked tensor `name`."""
    return f"{path}.{index}.{name[len(path) + 1:]}"


def first_layer(name: str, count: int, total: int, trailing: str | None) -> int:
    """The checkpoint index of row 0 of stacked tensor `name` ([count, ...] of `total` layers): 0, or
    total - count for a tensor of the last layers only (`trailing`: `Family.trailing_layers`)."""
    return total - count if trailing and re.search(trailing, name) else 0


def unstack_layers(flat: Mapping[str, np.ndarray], path: str | None,
                   trailing: str | None = None) -> dict[str, np.ndarray]:
    """The inverse of `stack_layers` on host arrays: views, one per layer, under the checkpoint's names
    (`trailing`: a regex of the stacked tensors that the last layers only have, `Family.trailing_layers`)."""
    total = max((v.shape[0] for k, v in flat.items() if is_stacked(k, path)), default=0)
    out = {}
    for name, value in flat.items():
        if is_stacked(name, path):
            first = first_layer(name, value.shape[0], total, trailing)
            out.update({layer_name(name, path, first + i): value[i] for i in range(value.shape[0])})
        else:
            out[name] = value
    return out


def _experts_pattern(experts: str) -> re.Pattern:
    """`<anything>.{experts}.{e}.<rest>` (groups: the part up to the expert list, e, rest)."""
    return re.compile(r"^((?:.+\.)?" + re.escape(experts) + r")\.(\d+)\.(.+)$")


def stack_experts(flat: Mapping[str, np.ndarray], experts: str | None) -> dict:
    """`....{experts}.{e}.name` tensors -> one `....{experts}.name` LayerStack [E, ...] each."""
    return dict(flat) if experts is None else _stack(flat, _experts_pattern(experts), "experts")


def unstack_experts(flat: Mapping[str, np.ndarray], experts: str | None) -> dict:
    """The inverse of `stack_experts` on host arrays (per-layer names): views, one per expert."""
    if experts is None:
        return dict(flat)
    pattern = re.compile(r"^((?:.+\.)?" + re.escape(experts) + r")\.(\D.*)$")
    out = {}
    for name, value in flat.items():
        match = pattern.match(name)
        if match is None:
            out[name] = value
        else:
            out.update({f"{match.group(1)}.{e}.{match.group(2)}": value[e] for e in range(value.shape[0])})
    return out


def to_layout(flat: Mapping[str, np.ndarray], family: Family, head: Head | None) -> dict:
    """Checkpoint-named tensors -> the task layout: experts stacked, then layers (`Family.experts`, `.layers`)."""
    return stack_layers(stack_experts(flat, family.experts), family.layers_path(head))


def from_layout(flat: Mapping[str, np.ndarray], family: Family, head: Head | None) -> dict[str, np.ndarray]:
    """Task-layout host arrays -> the checkpoint's names (the inverse of `to_layout`)."""
    return unstack_experts(unstack_layers(flat, family.layers_path(head), family.trailing_layers), family.experts)


def tensor_spec(family: Family, name: str, stacked: bool) -> tuple | None:
    """The family's tensor-parallel spec for a param (None when no rule names it)."""
    for pattern, spec in family.sharding:
        if re.search(pattern, name):
            return ((None,) + tuple(spec)) if stacked and spec else tuple(spec)
    return None


SHARDINGS = ("tensor", "fsdp")
"""How params lie on a mesh. "tensor": the family's tensor-parallel rules over the `model` axis, one copy
per `data` row. "fsdp" (fully sharded data parallel): as "tensor", and each tensor's largest dimension
the rules leave whole is split over the `data` axis too, so every device holds 1/(data x model) of it;
XLA all-gathers weights for the forward and reduce-scatters gradients, from the shardings alone."""


def fsdp_spec(spec: tuple | None, shape: tuple, mesh_shape: Mapping[str, int], stacked: bool) -> tuple | None:
    """`spec` with the "data" axis on the largest dimension it leaves unsplit that the data size divides
    (never the stacked layer axis, which `lax.scan` slices). A rule's axis that does not divide its
    dimension is dropped first (a 97-row vocabulary over model=2), so the rest still shards.

    >>> fsdp_spec(("model", None), (96, 48), {"data": 2, "model": 4}, stacked=False)
    ('model', 'data')
    >>> fsdp_spec((None, "model", None), (3, 96, 48), {"data": 2, "model": 4}, stacked=True)
    (None, 'model', 'data')
    >>> fsdp_spec(("model", None), (97, 48), {"data": 4, "model": 2}, False), fsdp_spec(None, (7,), {"data": 2}, False)
    ((None, 'data'), None)
    """
    axes = [a if a is not None and dim % mesh_shape[a] == 0 else None
            for a, dim in zip(tuple(spec or ()) + (None,) * (len(shape) - len(spec or ())), shape)]
    data = mesh_shape.get("data", 1)
    free = [d for d in range(1 if stacked else 0, len(shape)) if axes[d] is None and shape[d] % data == 0]
    if data == 1 or not free:
        return spec
    axes[max(free, key=lambda d: shape[d])] = "data"
    return tuple(axes)


def mesh_specs(family: Family, layers: str | None, shapes: Mapping[str, tuple], mesh_shape: Mapping[str, int],
               sharding: str = "tensor") -> dict[str, tuple | None]:
    """name -> mesh axes per tensor (None: no rule, replicated) for a `sharding` of `SHARDINGS`."""
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding={sharding!r} is not one of {SHARDINGS}")
    specs = {name: tensor_spec(family, name, is_stacked(name, layers)) for name in shapes}
    if sharding == "fsdp":
        specs = {name: fsdp_spec(spec, tuple(shapes[name]), mesh_shape, is_stacked(name, layers))
                 for name, spec in specs.items()}
    return specs


def host_tensors(flat: Mapping, dtype=None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, host array) one at a time (a stacked tensor is built just before it is handed on)."""
    for name, value in flat.items():
        arr = np.asarray(value)
        yield name, (arr if dtype is None or not _is_float(arr) else arr.astype(dtype))


def _is_float(arr) -> bool:
    return arr.dtype.kind == "f" or arr.dtype.name == "bfloat16"


def init_params(family: Family, config, *, head: Head | None = None, num_labels: int = 0, seed: int = 0) -> dict:
    """Random params (transformers' init rules) in the task layout on the selected backend; for
    examples, benchmarks and shape checks. A checkpoint loads with `zoohub.<Task>.from_preset`."""
    from zoohub.backend import ops
    from zoohub.presets.weights import unflatten

    rng = np.random.default_rng(seed)
    std = getattr(config, "initializer_range", 0.02)
    shapes = {family.root(head) + k: s for k, s in family.shapes(config).items()}
    if head is not None:
        tied = head.tied if config.tie_word_embeddings else ()
        shapes.update({k: s for k, s in head.shapes(config, num_labels).items() if k not in tied})
        shapes.update({family.root(head) + k: family.optional_shapes(config)[k] for k in head.backbone_extras})
    flat = {k: init_tensor(k, s, std=std, rng=rng) for k, s in shapes.items()}
    o = ops()
    return unflatten({k: o.asarray(v) for k, v in host_tensors(to_layout(flat, family, head))})
