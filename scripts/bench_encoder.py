"""Encoder benchmark: load time and throughput of a BERT-base-shaped model, zoohub vs transformers.

Makes a random BERT-base checkpoint with transformers (no network), then measures in one process:
load time (zoohub on jax and numpy, transformers `from_pretrained`, a raw `safetensors` read of the
same file) and sentences/s at batch 32, length 128 (zoohub jax, zoohub numpy, transformers on torch).

    python scripts/bench_encoder.py [--iters 3] [--layers 12]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def best_of(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()

    import torch
    import transformers
    from safetensors.numpy import load_file

    import zoohub
    from zoohub.backend import using

    folder = Path(tempfile.mkdtemp()) / "bert-base"
    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=args.layers)
    transformers.BertModel(config).save_pretrained(folder)
    size_mb = (folder / "model.safetensors").stat().st_size / 1e6

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(args.batch, args.length)).astype(np.int32)
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    rows = []

    raw = best_of(lambda: load_file(str(folder / "model.safetensors")), args.iters)
    hf_load = best_of(lambda: transformers.BertModel.from_pretrained(folder), args.iters)
    models = {}
    for backend in ("jax", "numpy"):
        with using(backend):
            def load():
                models[backend] = zoohub.Backbone.from_preset(folder)
            rows.append((f"load: zoohub ({backend})", best_of(load, args.iters), raw))
    rows.append(("load: transformers from_pretrained", hf_load, raw))
    rows.append(("load: raw safetensors.numpy.load_file", raw, raw))

    torch_model = transformers.BertModel.from_pretrained(folder).eval()
    torch_inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}
    with torch.inference_mode():
        torch_model(**torch_inputs)
        t_torch = best_of(lambda: torch_model(**torch_inputs), args.iters)
    throughput = [("throughput: transformers (torch CPU)", t_torch)]
    for backend in ("jax", "numpy"):
        model = models[backend]
        model.batch_size = args.batch
        model.predict(inputs)  # compile / warm up
        throughput.append((f"throughput: zoohub ({backend})", best_of(lambda: model.predict(inputs), args.iters)))

    print(f"\nBERT-base-shaped ({args.layers} layers, {size_mb:.0f} MB float32), batch {args.batch} x {args.length}\n")
    print(f"| {'measurement':42} | {'seconds':>8} | {'vs raw read':>11} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 13}|")
    for name, t, ref in rows:
        print(f"| {name:42} | {t:8.3f} | {t / ref:10.2f}x |")
    print(f"\n| {'measurement':42} | {'sent/s':>8} | {'vs torch':>11} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 13}|")
    for name, t in throughput:
        print(f"| {name:42} | {args.batch / t:8.1f} | {t_torch / t:10.2f}x |")


if __name__ == "__main__":
    main()
