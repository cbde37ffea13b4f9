"""Seq2SeqLM generation speed: a t5-small-shaped random model (d_model 512, 6+6 layers, 8 heads,
d_ff 2048, vocab 32128), greedy, batch 1 and 8, 64 new tokens: zoohub on jax vs transformers'
`generate` in the same process, and zoohub's first call (compile included).

Goals (issue 11): zoohub >= 2x transformers' tokens/s; first call <= 3 s.

    python scripts/bench_seq2seq.py            # full size (run on a quiet machine)
    python scripts/bench_seq2seq.py --quick    # tiny shape, a correctness run of the script
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

FULL = dict(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)
QUICK = dict(vocab_size=300, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model and 8 tokens (checks the script runs)")
    parser.add_argument("--source-length", type=int, default=32)
    args = parser.parse_args()
    import torch
    import transformers

    import zoohub
    from zoohub.backend import using

    shape, new = (QUICK, 8) if args.quick else (FULL, 64)
    torch.manual_seed(0)
    config = transformers.T5Config(**shape, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config).eval()
    folder = Path(tempfile.mkdtemp()) / "t5-bench"
    model.save_pretrained(folder)
    rng = np.random.default_rng(0)
    with using("jax"):
        t0 = time.perf_counter()
        ours = zoohub.Seq2SeqLM.from_preset(folder)
        print(f"load: {time.perf_counter() - t0:.2f} s")
    for batch in (1, 8):
        ids = rng.integers(2, shape["vocab_size"], (batch, args.source_length)).astype(np.int32)
        inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        kwargs = dict(max_new_tokens=new, stop_token_ids=[])  # no early stop: every row makes `new` tokens
        t0 = time.perf_counter()
        first = ours.generate_tokens(inputs, **kwargs)
        first_call = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours.generate_tokens(inputs, **kwargs)
        zoohub_tps = batch * new / (time.perf_counter() - t0)
        with torch.no_grad():
            ref_in = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}
            model.generate(**ref_in, max_new_tokens=new, min_new_tokens=new, do_sample=False)  # warm-up
            t0 = time.perf_counter()
            ref = model.generate(**ref_in, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            torch_tps = batch * new / (time.perf_counter() - t0)
        same = [list(r) for r in first] == ref[:, 1:].tolist()
        print(f"batch {batch}: zoohub jax {zoohub_tps:8.1f} tok/s (first call {first_call:.2f} s) | transformers "
              f"{torch_tps:8.1f} tok/s | ratio {zoohub_tps / torch_tps:.2f}x | same tokens: {same}")


if __name__ == "__main__":
    main()
