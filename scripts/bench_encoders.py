"""Encoder throughput of ModernBERT-base- and DeBERTa-v3-base-shaped models, zoohub jax vs transformers.

Makes each random checkpoint with transformers (no network), loads it in zoohub on jax, checks both give
the same hidden states, then times the forward pass at batch 8 x 128 tokens (best of --iters after a
warm-up call; transformers on torch CPU with its default attention, in the same process).

    python scripts/bench_encoders.py [--iters 5] [--batch 8] [--length 128] [--layers 12]
    python scripts/bench_encoders.py --quick   # tiny widths: checks the script runs, numbers mean nothing
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


def shapes(args) -> dict[str, tuple[str, str, dict]]:
    """name -> (transformers config class, model class, kwargs): the base models' published shapes,
    with --layers layers (ModernBERT-base has 22; 12 keeps the two comparable)."""
    if args.quick:
        width = dict(hidden_size=96, num_attention_heads=4, num_hidden_layers=2)
        vocab, deberta_mlp, modernbert_mlp = 1000, 192, 144
    else:
        width = dict(hidden_size=768, num_attention_heads=12, num_hidden_layers=args.layers)
        vocab, deberta_mlp, modernbert_mlp = None, 3072, 1152
    return {
        "ModernBERT-base": ("ModernBertConfig", "ModernBertModel", dict(
            width, vocab_size=vocab or 50368, intermediate_size=modernbert_mlp, global_attn_every_n_layers=3,
            local_attention=128, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)),
        "DeBERTa-v3-base": ("DebertaV2Config", "DebertaV2Model", dict(
            width, vocab_size=vocab or 128100, intermediate_size=deberta_mlp, relative_attention=True,
            position_buckets=256, max_relative_positions=-1, share_att_key=True, norm_rel_ebd="layer_norm",
            pos_att_type="p2c|c2p", position_biased_input=False, type_vocab_size=0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="tiny widths, batch 2 x 32, 2 iterations")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.length, args.iters = 2, 32, 2

    import torch
    import transformers

    import zoohub
    from zoohub.backend import using

    rng = np.random.default_rng(0)
    rows = []
    for name, (config_name, model_name, kwargs) in shapes(args).items():
        folder = Path(tempfile.mkdtemp()) / name
        torch.manual_seed(0)
        config = getattr(transformers, config_name)(**kwargs)
        torch_model = getattr(transformers, model_name)(config).eval()
        torch_model.save_pretrained(folder)
        ids = rng.integers(5, config.vocab_size, size=(args.batch, args.length)).astype(np.int32)
        inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        torch_inputs = {k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}

        with torch.inference_mode():
            reference = torch_model(**torch_inputs).last_hidden_state.numpy()
            t_torch = best_of(lambda: torch_model(**torch_inputs), args.iters)
        with using("jax"):
            model = zoohub.Backbone.from_preset(folder, sequence_length=args.length)
            model.batch_size = args.batch
            start = time.perf_counter()
            ours = model.predict(inputs)  # compiles
            first = time.perf_counter() - start
            t_jax = best_of(lambda: model.predict(inputs), args.iters)
        diff = float(np.abs(np.asarray(ours) - reference).max())
        rows.append((name, t_torch, t_jax, first, diff))

    tokens = args.batch * args.length
    print(f"\nEncoder forward, batch {args.batch} x {args.length} tokens, best of {args.iters}"
          f"{' (--quick: tiny widths, not a measurement)' if args.quick else ''}\n")
    print(f"| {'model':16} | {'transformers tok/s':>18} | {'zoohub jax tok/s':>16} | {'ratio':>6} "
          f"| {'first call s':>12} | {'max abs diff':>12} |")
    print(f"|{'-' * 18}|{'-' * 20}|{'-' * 18}|{'-' * 8}|{'-' * 14}|{'-' * 14}|")
    for name, t_torch, t_jax, first, diff in rows:
        print(f"| {name:16} | {tokens / t_torch:18.0f} | {tokens / t_jax:16.0f} | {t_torch / t_jax:5.2f}x "
              f"| {first:12.2f} | {diff:12.1e} |")


if __name__ == "__main__":
    main()
