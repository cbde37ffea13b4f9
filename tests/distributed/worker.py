"""One process of a multi-process test run (launched by launch.py, settings in ZOOHUB_* variables).

    python worker.py SCENARIO OUT [HEARTBEAT_SECONDS]

Reads OUT/inputs.json, writes OUT/result-<process index>.json. Scenarios:
  all   load (model axis across processes), logits, generate, fit data-parallel, tensor-parallel and
        FSDP with a checkpoint, resume from it, save_to_preset
  exit, freeze
        load and compute together, then process 1 exits abruptly (exit) or stops responding (freeze,
        SIGSTOP) while process 0 goes on computing
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import zoohub

scenario, out = sys.argv[1], Path(sys.argv[2])
heartbeat = int(sys.argv[3]) if len(sys.argv) > 3 else 100
zoohub.distributed.initialize(initialization_timeout=60, heartbeat_timeout_seconds=heartbeat)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from zoohub.backend.sharding import make_mesh  # noqa: E402
from zoohub.presets.weights import flatten  # noqa: E402
from zoohub.tasks.training import loop  # noqa: E402

spec = json.loads((out / "inputs.json").read_text())
preset, texts, fit_args = spec["preset"], spec["texts"], spec["fit_args"]
tokens = {k: np.asarray(v, np.int32) for k, v in spec["tokens"].items()}
rank = jax.process_index()
result: dict = {"process": rank, "devices": jax.device_count(), "local_devices": jax.local_device_count()}
Q = "model.layers.self_attn.q_proj.weight"


def layout(a) -> dict:
    """The array's spec, and the shape and place (start of each dimension) of each shard held here."""
    return {"spec": [s for s in a.sharding.spec], "shape": list(a.shape),
            "local_shards": [list(s.data.shape) for s in a.addressable_shards],
            "local_starts": sorted([sl.start or 0 for sl in s.index] for s in a.addressable_shards)}


def count_writes(module, name: str) -> None:
    """Count this process's calls of a folder writer (only process 0 should write)."""
    real = getattr(module, name)

    def counted(*args, **kwargs):
        result["writes"] = result.get("writes", 0) + 1
        return real(*args, **kwargs)
    setattr(module, name, counted)


def local_bytes(tree) -> int:
    """Bytes of the shards this process's devices hold."""
    return int(sum(s.data.nbytes for a in jax.tree.leaves(tree) for s in a.addressable_shards))


CLOCK = [time.monotonic()]


def lap(name: str) -> None:
    now = time.monotonic()
    result.setdefault("seconds", {})[name] = round(now - CLOCK[0], 2)
    CLOCK[0] = now


def save(**extra) -> None:
    result.update(extra)
    (out / f"result-{rank}.json").write_text(json.dumps(result))


def load(**mesh):
    return zoohub.CausalLM.from_preset(preset, mesh=make_mesh(**mesh))


if scenario == "all":
    from zoohub.tasks import base
    from zoohub.tasks.training import checkpoint

    count_writes(base, "save_preset_folder")  # presets (save_to_preset, and each checkpoint's preset)
    count_writes(checkpoint, "write_folder")  # each checkpoint's optimizer state folder
    result["writes"] = 0
    tp = load(model=8)  # the model axis spans both processes: each holds half of every split tensor
    result["load"] = layout(flatten(tp.params)[Q])
    result["param_bytes_here"] = local_bytes(tp.params)
    lap("load")
    result["logits"] = tp.logits(tokens).tolist()
    lap("logits")
    result["generate"] = tp.generate_tokens(tokens, max_new_tokens=8, stop_token_ids=[])
    lap("generate")
    result["fit_tensor"] = tp.fit(texts, epochs=1, **fit_args)["step_loss"]
    lap("fit_tensor")
    result["fit_data"] = load(data=8).fit(texts, epochs=1, **fit_args)["step_loss"]
    lap("fit_data")

    fsdp = load(data=4, model=2)  # the data axis spans both processes
    real_save = loop.save_checkpoint

    def spy(folder, **kw):  # what a checkpoint is handed: the live optimizer state, sharded
        names, leaves, _ = loop.load_checkpoint.__globals__["_leaves_with_names"](kw["opt_state"])
        mu = next(leaf for name, leaf in zip(names, leaves) if ".mu[" in name and Q in name)
        result.setdefault("optimizer", {"bytes_here": local_bytes(kw["opt_state"]), "mu_q": layout(mu),
                                        "total_bytes": int(sum(np.prod(l.shape) * l.dtype.itemsize for l in leaves))})
        return real_save(folder, **kw)
    loop.save_checkpoint = spy
    ckpt = out / "checkpoints"
    result["fit_fsdp"] = fsdp.fit(texts, epochs=1, sharding="fsdp", checkpoint_dir=ckpt, **fit_args)["step_loss"]
    result["fsdp_param"] = layout(flatten(fsdp.params)[Q])
    lap("fit_fsdp")
    # Back to the weights as loaded, so only the checkpoint can bring epoch 1 back; the same task keeps
    # its compiled train step (a fresh one would compile it again, the longest part of this run).
    resumed = fsdp
    resumed.params, resumed.sharding = load(data=4, model=2).params, "tensor"
    history = resumed.fit(texts, epochs=2, sharding="fsdp", checkpoint_dir=ckpt, resume=True, **fit_args)
    result["fit_fsdp_resumed"] = history["step_loss"]
    lap("resume")
    result["saved"] = str(resumed.save_to_preset(out / "final"))
    result["final_logits"] = resumed.logits(tokens).tolist()
    lap("save")
    save()
elif scenario in ("exit", "freeze"):
    lm = load(model=8)
    lm.logits(tokens)  # both processes computed together once
    save(calls_after=0)
    if rank == 1:
        # Leave only once process 0 has its result of the joint call too: a collective can return here
        # before the other side has received everything, and leaving then would fail that first call.
        deadline = time.monotonic() + 60
        while not (out / "result-0.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if scenario == "exit":
            os._exit(3)  # no shutdown, no goodbye: its sockets close
        os.kill(os.getpid(), signal.SIGSTOP)  # a hung host: sockets stay open, heartbeats stop
    time.sleep(0.5)
    for i in range(10**6):  # each call needs process 1's shards
        lm.logits(tokens)
        save(calls_after=i + 1)
else:
    raise SystemExit(f"unknown scenario {scenario!r}")
