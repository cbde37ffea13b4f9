"""Several processes, one computation: JAX's own multi-process runtime (`jax.distributed`).

Run the same script once per host (or several times on one machine), each with its own process id;
after `initialize`, `jax.devices()` lists the devices of every process, a mesh can span them all, and
each process holds and computes only the shards on its own devices. zoohub adds nothing to the
transport: the coordinator, heartbeats and collectives are JAX's (gloo over TCP on CPU).

    # on each host: the same command, its own rank
    #   python train.py   with  ZOOHUB_COORDINATOR=10.0.0.1:1234 ZOOHUB_NUM_PROCESSES=2 ZOOHUB_PROCESS_ID=$RANK
    >>> import zoohub
    >>> from zoohub.backend.sharding import make_mesh
    >>> zoohub.distributed.initialize()             # joins the others; needs them  # doctest: +SKIP
    >>> mesh = make_mesh(model=1)                  # e.g. model=8: 8-way tensor parallel over all the processes
    >>> with zoohub.backend.using("jax"):
    ...     lm = zoohub.CausalLM.from_preset("toy_llama", mesh=mesh)   # the bundled toy
    >>> lm.mesh.axis_names
    ('data', 'model')

Saving from such a run is single-writer: every process takes part in gathering the shards, process 0
writes, the others wait for it and raise if it failed (`write_once`).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import pkgutil
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

log = logging.getLogger("zoohub")

T = TypeVar("T")

# Where the settings come from when `initialize` is called without them, first match wins:
# zoohub's own variables, then torchrun-style ones. Under SLURM (or Open MPI, Kubernetes) with none of
# these set, JAX's own cluster detection reads SLURM_PROCID, SLURM_NTASKS and SLURM_STEP_NODELIST.
ENV_SETS = (
    ("ZOOHUB_COORDINATOR", "ZOOHUB_NUM_PROCESSES", "ZOOHUB_PROCESS_ID"),
    (("MASTER_ADDR", "MASTER_PORT"), "WORLD_SIZE", "RANK"),
)


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict:
    """(coordinator_address, num_processes, process_id) found in the environment, as keyword arguments
    of `jax.distributed.initialize`; an empty dict when none are set (JAX then detects the cluster).

    >>> settings_from_env({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234", "WORLD_SIZE": "2", "RANK": "1"})
    {'coordinator_address': '10.0.0.1:1234', 'num_processes': 2, 'process_id': 1}
    >>> settings_from_env({"SLURM_PROCID": "3"})
    {}
    """
    env = os.environ if environ is None else environ
    for address, count, rank in ENV_SETS:
        if isinstance(address, tuple):
            host, port = (env.get(name) for name in address)
            coordinator = f"{host}:{port}" if host and port else None
        else:
            coordinator = env.get(address)
        if coordinator:
            names = (address if isinstance(address, str) else "/".join(address), count, rank)
            try:
                return {"coordinator_address": coordinator, "num_processes": int(env[count]),
                        "process_id": int(env[rank])}
            except (KeyError, ValueError):
                raise ValueError(f"{names[0]} is set, so {names[1]} and {names[2]} must be integers too "
                                 f"(got {env.get(count)!r}, {env.get(rank)!r})") from None
    return {}


def _has_accelerator() -> bool:
    """Whether JAX may find a GPU or TPU here, decided without starting a backend (starting one before
    `jax.distributed.initialize` is an error)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return any(p and p != "cpu" for p in platforms.split(","))
    plugins = {e.name for e in importlib.metadata.entry_points(group="jax_plugins")}
    try:
        import jax_plugins  # noqa: F401  (namespace package of plugins installed the older way)

        plugins |= {m.name for m in pkgutil.iter_modules(jax_plugins.__path__)}
    except ImportError:
        pass
    return bool(plugins) or importlib.util.find_spec("libtpu") is not None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids=None, initialization_timeout: int = 300,
               heartbeat_timeout_seconds: int = 100, cpu_collectives: str | None = "gloo") -> None:
    """Join this process to a multi-process JAX run; call it first, before anything uses jax.

    Args:
        coordinator_address: "host:port" of process 0 (it listens there; the others connect). With
            the three settings left out they come from ZOOHUB_COORDINATOR / ZOOHUB_NUM_PROCESSES /
            ZOOHUB_PROCESS_ID, else MASTER_ADDR:MASTER_PORT / WORLD_SIZE / RANK, else JAX detects
            the cluster (SLURM's SLURM_PROCID / SLURM_NTASKS / SLURM_STEP_NODELIST, Open MPI).
        num_processes, process_id: how many processes take part, and which one this is (0-based).
        local_device_ids: the local accelerators this process uses (default: all it sees).
        initialization_timeout: seconds to wait for every process to join before failing.
        heartbeat_timeout_seconds: a process not heard from for this long counts as dead; the others
            then stop with an error naming the missing task instead of waiting forever.
        cpu_collectives: the CPU backend's cross-process collectives ("gloo", or None to leave JAX's
            default), set when no accelerator is present: without it CPU arrays cannot span processes.

    Example:
        >>> import zoohub
        >>> settings_from_env({"ZOOHUB_COORDINATOR": "10.0.0.1:1234", "ZOOHUB_NUM_PROCESSES": "2",
        ...                    "ZOOHUB_PROCESS_ID": "0"})           # what initialize() reads when given nothing
        {'coordinator_address': '10.0.0.1:1234', 'num_processes': 2, 'process_id': 0}
        >>> zoohub.distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)  # doctest: +SKIP
    """
    import jax

    given = {k: v for k, v in (("coordinator_address", coordinator_address), ("num_processes", num_processes),
                               ("process_id", process_id)) if v is not None}
    settings = given or settings_from_env()
    if cpu_collectives and not _has_accelerator():
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(**settings, local_device_ids=local_device_ids,
                               initialization_timeout=initialization_timeout,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    log.info("process %d of %d joined; %d devices in all, %d here", jax.process_index(), jax.process_count(),
             jax.device_count(), jax.local_device_count())


def _joined():
    """jax, if this process joined a multi-process run; else None (asking jax would start a backend)."""
    jax = sys.modules.get("jax")
    return jax if jax is not None and jax.distributed.is_initialized() else None


def process_index() -> int:
    """This process's index (0 without `initialize`)."""
    jax = _joined()
    return jax.process_index() if jax is not None else 0


def process_count() -> int:
    """How many processes take part (1 without `initialize`)."""
    jax = _joined()
    return jax.process_count() if jax is not None else 1


def is_writer() -> bool:
    """Whether this process writes shared files (only process 0 does)."""
    return process_index() == 0


def gather(x):
    """A host numpy copy of a jax array, whichever devices hold it. An array with shards on other
    processes is assembled with `process_allgather`, a collective: every process must call this for
    the same arrays in the same order."""
    import numpy as np

    if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def write_once(write: Callable[[], T], what: str) -> T | None:
    """Run `write` on process 0 only, while the others wait for it; then every process has either its
    result (process 0) or None, or raises if process 0 failed, so no process goes on believing a
    checkpoint exists that does not. With one process this is `write()`."""
    if process_count() == 1:
        return write()
    import numpy as np
    from jax.experimental import multihost_utils

    result, error = None, None
    if is_writer():
        try:
            result = write()
        except BaseException as e:  # told to the others below, then raised here
            error = e
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if error is not None:
        raise error
    if not int(ok):
        raise RuntimeError(f"process 0 failed writing {what}; its log says why")
    return result
