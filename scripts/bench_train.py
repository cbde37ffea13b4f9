"""Training-step benchmark: zoohub (jax) vs transformers + torch on CPU, same model, data and optimizer.

A BERT-base-shaped random BertForSequenceClassification (2 classes), sequence 128, batch 8, AdamW
(lr 2e-5, weight decay 0.01, clipping at 1.0), dropout on in both. Then the per-step overhead of a
tiny model (hidden 48, 2 layers, sequence 16, batch 8), where the step is all overhead.

    python scripts/bench_train.py            # ~3 minutes on 2 cores
    python scripts/bench_train.py --steps 3 --skip-torch
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np

os.environ.setdefault("ZOOHUB_QUIET", "1")
warnings.filterwarnings("ignore")


def make_checkpoint(folder: str, **sizes) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(num_labels=2, **sizes)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)


def data(n: int, length: int, vocab: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(n, length)).astype(np.int32)
    ids[:, 0] = 2
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}, \
        rng.integers(0, 2, size=n)


def zoohub_step_time(folder: str, tokens: dict, labels: np.ndarray, batch: int, steps: int) -> tuple[float, float, float]:
    """(steady-state seconds per step, seconds per step of the whole fit call, first-call seconds incl.
    compile). Steady state is timed between step callbacks, as torch's loop is timed; the whole-fit
    figure adds fit's per-call setup (float32 master copies, optimizer init, writing params back)."""
    import zoohub

    clf = zoohub.TextClassifier.from_preset(folder, num_classes=2)
    stamps: list[float] = []
    args = dict(batch_size=batch, learning_rate=2e-5, weight_decay=0.01, max_grad_norm=1.0, shuffle=False,
                callbacks=[lambda event, logs: event == "step" and stamps.append(time.perf_counter()) and False])
    head = {k: v[:batch] for k, v in tokens.items()}
    start = time.perf_counter()
    clf.fit(head, labels[:batch], **args)  # compiles
    first = time.perf_counter() - start
    body = {k: v[: batch * steps] for k, v in tokens.items()}
    stamps.clear()
    start = time.perf_counter()
    clf.fit(body, labels[: batch * steps], **args)
    whole = (time.perf_counter() - start) / steps
    return float(np.median(np.diff(stamps))), whole, first


def torch_step_time(folder: str, tokens: dict, labels: np.ndarray, batch: int, steps: int) -> float:
    import torch
    import transformers

    model = transformers.BertForSequenceClassification.from_pretrained(folder).train()
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=2e-5, eps=1e-8)
    tensors = {k: torch.from_numpy(v.astype(np.int64)) for k, v in tokens.items()}
    y = torch.from_numpy(labels.astype(np.int64))

    def step(i: int) -> None:
        sl = slice(i * batch, (i + 1) * batch)
        opt.zero_grad(set_to_none=True)
        loss = model(**{k: v[sl] for k, v in tensors.items()}, labels=y[sl]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step(0)  # warm-up (allocator, first-call costs)
    start = time.perf_counter()
    for i in range(steps):
        step(i % (len(labels) // batch))
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()
    import jax
    import torch

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        make_checkpoint(base)  # BERT-base: 768 wide, 12 layers, 12 heads, vocab 30522
        tokens, labels = data(args.batch * args.steps, args.length, 30522)
        ours, whole, first = zoohub_step_time(base, tokens, labels, args.batch, args.steps)
        print(f"BERT-base seq {args.length} batch {args.batch}: zoohub {ours * 1e3:.0f} ms/step steady "
              f"({args.batch / ours:.2f} ex/s; {whole * 1e3:.0f} ms/step over a whole {args.steps}-step fit call; "
              f"first fit incl. compile {first:.1f} s)")
        if not args.skip_torch:
            theirs = torch_step_time(base, tokens, labels, args.batch, args.steps)
            print(f"BERT-base seq {args.length} batch {args.batch}: transformers+torch {theirs * 1e3:.0f} ms/step "
                  f"({args.batch / theirs:.2f} ex/s); zoohub speed-up {theirs / ours:.2f}x")

        tiny = os.path.join(tmp, "tiny")
        make_checkpoint(tiny, vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=80, max_position_embeddings=64)
        tokens, labels = data(8 * 200, 16, 97)
        step, _, _ = zoohub_step_time(tiny, tokens, labels, 8, 200)
        print(f"tiny model (48 wide, 2 layers) seq 16 batch 8: zoohub {step * 1e3:.2f} ms/step (all loop overhead)")


if __name__ == "__main__":
    main()
