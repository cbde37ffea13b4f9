"""Scale-out with JAX's own sharding: a device mesh, rules (tensor-name pattern -> PartitionSpec),
and loading that places each tensor straight into its shards (each device reads only its slice
of the memory-mapped file).

    >>> import jax, zoohub
    >>> from zoohub.backend.sharding import make_mesh
    >>> mesh = make_mesh(model=1)                               # all devices on the data axis
    >>> clf = zoohub.TextClassifier.from_preset("path/to/bert", mesh=mesh)  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger("zoohub")

Rules = Sequence[tuple[str, PartitionSpec]]


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> Mesh:
    """A ("data", "model") mesh; `data` defaults to all devices not used by `model`."""
    devices = list(devices if devices is not None else jax.devices())
    data = data or len(devices) // model
    if data * model > len(devices):
        raise ValueError(f"a {data} x {model} mesh needs {data * model} devices; {len(devices)} are available")
    return Mesh(np.array(devices[: data * model]).reshape(data, model), ("data", "model"))


def spec_for(name: str, shape: tuple, rules: Rules, mesh: Mesh) -> PartitionSpec:
    """The first rule whose pattern matches `name`, if every sharded dim divides evenly; else replicated."""
    for pattern, spec in rules:
        if re.search(pattern, name):
            if len(spec) > len(shape):
                continue
            for dim, axis in zip(shape, spec):
                if axis is not None and dim % mesh.shape[axis]:
                    log.info("%s %s does not split over %s=%d; replicated", name, shape, axis, mesh.shape[axis])
                    return PartitionSpec()
            return spec
    return PartitionSpec()


def place(flat: Mapping[str, np.ndarray], mesh: Mesh, rules: Rules) -> dict[str, jax.Array]:
    """Device arrays sharded by the rules, each shard read from the (memory-mapped) host array."""
    out = {}
    for name, arr in flat.items():
        sharding = NamedSharding(mesh, spec_for(name, arr.shape, rules, mesh))
        out[name] = jax.make_array_from_callback(arr.shape, sharding, lambda index, a=arr: np.asarray(a[index]))
    return out


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
    """Split a batch over the mesh's data axis (data parallel) when the batch size allows it."""
    size = mesh.shape["data"]
    out = {}
    for k, v in batch.items():
        spec = PartitionSpec("data") if v.shape[0] % size == 0 else PartitionSpec()
        out[k] = jax.device_put(v, NamedSharding(mesh, spec))
    return out
