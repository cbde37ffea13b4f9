"""Memory per process past one machine: loading a SmolLM2-135M-shaped float32 checkpoint (538 MB, random
weights made by transformers here) and the AdamW state of fully sharded (FSDP) training, in one process
and in two jax.distributed processes of 4 CPU devices each on 127.0.0.1, as they would run on two hosts.

    python scripts/bench_distributed.py                      # the 538 MB checkpoint (made once, reused)
    python scripts/bench_distributed.py --checkpoint DIR     # reuse a folder made by an earlier run
    python scripts/bench_distributed.py --tiny               # a tiny checkpoint: a smoke run of the script

Each case is fresh processes. Per process: anonymous memory (RssAnon: heap and CPU device buffers, not
the memory-mapped file) after `import zoohub` and joining the run (the baseline), its peak while loading
(sampled every 2 ms), and what it holds after; `VmHWM` (peak resident, file pages included) beside it.
For the optimizer: the bytes of AdamW state (the float32 moments fit keeps) on this process's devices,
from `opt.init` on the params as fit lays them out, and the RssAnon it added.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, processes, devices per process, mesh (None: no mesh), sharding)
LOAD_CASES = [
    ("one process, one device", 1, 1, None, "tensor"),
    ("one process, 8 devices, model=8", 1, 8, {"model": 8}, "tensor"),
    ("two processes x 4 devices, model=8 across them", 2, 4, {"model": 8}, "tensor"),
]
OPTIMIZER_CASES = [
    ("one process, one device (no sharding)", 1, 1, None, "tensor"),
    ("one process x 4 devices, fsdp data=4", 1, 4, {"data": 4}, "fsdp"),
    ("two processes x 4 devices, fsdp data=8", 2, 4, {"data": 8}, "fsdp"),
]


def status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakSampler(threading.Thread):
    """The highest RssAnon seen while it runs (the kernel keeps a peak only for all resident memory)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = status("RssAnon"), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, status("RssAnon"))
            time.sleep(0.002)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, status("RssAnon"))


def worker(folder: str, mesh_json: str, sharding: str, optimizer: bool) -> None:
    """One process of a case; prints its figures as one JSON line."""
    import zoohub

    if int(os.environ.get("ZOOHUB_NUM_PROCESSES", "1")) > 1:
        zoohub.distributed.initialize(initialization_timeout=120)
    import jax
    import jax.numpy as jnp

    from zoohub.backend.sharding import make_mesh
    from zoohub.tasks.training.optim import build_optimizer, split_params

    jax.devices()
    bare = status("RssAnon")
    mesh = json.loads(mesh_json)
    sampler = PeakSampler()
    sampler.start()
    lm = zoohub.CausalLM.from_preset(folder, mesh=make_mesh(**mesh) if mesh else None, sharding=sharding)
    jax.block_until_ready(lm.params)
    out = {"process": jax.process_index(), "bare": bare, "load_peak": sampler.stop(), "loaded": status("RssAnon"),
           "vm_hwm": status("VmHWM"),
           "params_here": int(sum(s.data.nbytes for a in jax.tree.leaves(lm.params) for s in a.addressable_shards))}
    if optimizer:
        trainable, _ = split_params(lm.params)
        trainable = {k: jnp.array(v, dtype=jnp.float32, copy=True) for k, v in trainable.items()}  # as fit does
        opt = build_optimizer(trainable, layers=lm.family.layers_path(lm.head))
        before = status("RssAnon")
        state = jax.block_until_ready(opt.init(trainable))
        leaves = jax.tree.leaves(state)
        out.update(optimizer_added=status("RssAnon") - before,
                   optimizer_here=int(sum(s.data.nbytes for a in leaves for s in a.addressable_shards)),
                   optimizer_total=int(sum(a.size * a.dtype.itemsize for a in leaves)))
    print(json.dumps(out), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(folder: str, processes: int, devices: int, mesh, sharding: str, optimizer: bool) -> list[dict]:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
           "ZOOHUB_BACKEND": "jax", "ZOOHUB_QUIET": "1", "PYTHONPATH": ROOT,
           "ZOOHUB_COORDINATOR": f"127.0.0.1:{free_port()}", "ZOOHUB_NUM_PROCESSES": str(processes)}
    args = [sys.executable, os.path.abspath(__file__), "--worker", folder, json.dumps(mesh), sharding,
            str(int(optimizer))]
    procs = [subprocess.Popen(args, env={**env, "ZOOHUB_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(processes)]
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=900)
            if p.returncode:
                raise RuntimeError(stderr[-3000:])
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def make_tiny(folder: str) -> None:
    import transformers

    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(config).float().save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="reuse a folder made by an earlier run")
    parser.add_argument("--tiny", action="store_true", help="a tiny checkpoint: check the script runs")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    folder = args.checkpoint or os.path.join(tempfile.gettempdir(), "zoohub-bench-tiny" if args.tiny
                                             else "zoohub-bench-smollm2-shaped")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        if args.tiny:
            make_tiny(folder)
        else:
            from scripts.bench_generate import make_checkpoint

            make_checkpoint(folder)
    weights = os.path.getsize(os.path.join(folder, "model.safetensors"))
    mb = lambda b: f"{b / 1e6:7.0f} MB"  # noqa: E731
    print(f"checkpoint: {folder} ({weights / 1e6:.0f} MB of float32 weights)\n")
    print("loading (per process): peak and held RssAnon above the bare process, as a share of the weights")
    for name, processes, devices, mesh, sharding in LOAD_CASES:
        for r in run_case(folder, processes, devices, mesh, sharding, optimizer=False):
            print(f"  {name:48s} p{r['process']}: peak {mb(r['load_peak'] - r['bare'])} "
                  f"({(r['load_peak'] - r['bare']) / weights:.2f}x), held {mb(r['loaded'] - r['bare'])}, "
                  f"device buffers {mb(r['params_here'])}, VmHWM {mb(r['vm_hwm'])}")
    print("\nAdamW state (per process): bytes on this process's devices, and the RssAnon opt.init added")
    for name, processes, devices, mesh, sharding in OPTIMIZER_CASES:
        for r in run_case(folder, processes, devices, mesh, sharding, optimizer=True):
            print(f"  {name:48s} p{r['process']}: state here {mb(r['optimizer_here'])} of "
                  f"{mb(r['optimizer_total'])} ({r['optimizer_here'] / r['optimizer_total']:.3f}), "
                  f"RssAnon +{mb(r['optimizer_added'])}, params here {mb(r['params_here'])}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1")
    else:
        main()
