"""Scale-out with JAX's own sharding: a device mesh, and loading that places each tensor straight
into its shards by the family's tensor-parallel rules (each device reads only its slice of the
memory-mapped file).

    >>> import jax, zoohub
    >>> from zoohub.backend.sharding import make_mesh
    >>> mesh = make_mesh(model=1)                               # all devices on the data axis
    >>> with zoohub.backend.using("jax"):                       # sharding is the jax backend's
    ...     clf = zoohub.TextClassifier.from_preset("starter_bert_tiny_en", mesh=mesh)
    >>> clf.predict(["great film", "awful film"]).shape
    (2, 2)
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger("zoohub")


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> Mesh:
    """A ("data", "model") mesh; `data` defaults to all devices not used by `model`."""
    devices = list(devices if devices is not None else jax.devices())
    data = data or len(devices) // model
    if data * model > len(devices):
        raise ValueError(f"a {data} x {model} mesh needs {data * model} devices; {len(devices)} are available")
    return Mesh(np.array(devices[: data * model]).reshape(data, model), ("data", "model"))


# A tensor no rule names is replicated on every device; past this size that is worth a warning.
REPLICATE_WARN_BYTES = 1 << 20


def spec_for(name: str, shape: tuple, spec: Sequence | None, mesh: Mesh) -> PartitionSpec:
    """`spec` (a tuple of mesh axis names) as a PartitionSpec, if every split dim divides evenly;
    otherwise, or with no spec, replicated."""
    if spec is None:
        return PartitionSpec()
    if len(spec) > len(shape):
        raise ValueError(f"{name}: spec {spec} has more axes than the tensor's shape {shape}")
    for dim, axis in zip(shape, spec):
        if axis is not None and dim % mesh.shape[axis]:
            log.info("%s %s does not split over %s=%d; replicated", name, shape, axis, mesh.shape[axis])
            return PartitionSpec()
    return PartitionSpec(*spec)


def place(flat: Mapping, mesh: Mesh, specs: Mapping[str, Sequence | None], dtype=None) -> dict[str, jax.Array]:
    """Device arrays sharded by `specs` (name -> axis tuple; None: no rule, replicated), each shard
    read from the host array (a memory-mapped view, or anything indexable with `.shape`)."""
    out = {}
    for name, arr in flat.items():
        spec = specs.get(name)
        nbytes = int(np.prod(arr.shape)) * np.dtype(arr.dtype).itemsize
        if spec is None and nbytes > REPLICATE_WARN_BYTES:
            log.warning("%s %s matches no tensor-parallel rule; replicated on all %d devices", name,
                        tuple(arr.shape), mesh.size)
        sharding = NamedSharding(mesh, spec_for(name, tuple(arr.shape), spec, mesh))

        def read(index, a=arr):
            block = np.asarray(a[index])
            return block if dtype is None else block.astype(dtype)

        out[name] = jax.make_array_from_callback(tuple(arr.shape), sharding, read)
    return out


def reshard(flat: Mapping[str, jax.Array], mesh: Mesh, specs: Mapping[str, Sequence | None]) -> dict[str, jax.Array]:
    """The same arrays laid out by `specs` on `mesh` (device to device; across processes too)."""
    shardings = {name: NamedSharding(mesh, spec_for(name, tuple(a.shape), specs.get(name), mesh))
                 for name, a in flat.items()}
    return jax.jit(lambda tree: tree, out_shardings=shardings)(dict(flat))


def put_like(host, like: jax.Array) -> jax.Array:
    """A host array placed as `like` is (its sharding and dtype); each process copies only its own shards.
    Where `like` sits on one device, so does the copy, left free to move (as `jnp.asarray` leaves it)."""
    if len(like.sharding.device_set) == 1:
        return jax.numpy.asarray(np.asarray(host), dtype=like.dtype)
    return jax.make_array_from_callback(tuple(like.shape), like.sharding,
                                        lambda index: np.asarray(host[index], dtype=like.dtype))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
    """Split a batch over the mesh's data axis (data parallel) when the batch size allows it."""
    size = mesh.shape["data"]
    out = {}
    for k, v in batch.items():
        spec = PartitionSpec("data") if v.shape[0] % size == 0 else PartitionSpec()
        out[k] = jax.device_put(v, NamedSharding(mesh, spec))
    return out
