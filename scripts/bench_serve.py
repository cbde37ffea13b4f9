"""Serving benchmark: `zoohub serve`'s engine over HTTP on a SmolLM2-135M-shaped random Llama (made by
transformers here, no network), with 1, 4, 8 and 16 concurrent streaming clients, against transformers'
`generate` serving the same requests one at a time.

    python scripts/bench_serve.py                 # the 135M shape (30 layers, D 576, 9/3 heads, F 1536, V 49152)
    python scripts/bench_serve.py --size tiny     # a smoke run of the script in seconds
    python scripts/bench_serve.py --requests 3 --new 64 --prompt 64

Each client sends `--requests` requests one after another (/v1/completions, token-id prompts of
`--prompt` random tokens, greedy, `--new` tokens at most, streamed). Columns: aggregate tokens/s (all
completion tokens / wall time of the level), p50 and p99 time to first token as the client sees it
(request sent -> first streamed piece), the engine's mean decode batch, and the ratio to transformers'
tokens/s. The transformers baseline generates, per request, exactly the tokens the server produced
(`min_new_tokens`), greedy, one request at a time on all cores, after the server has stopped.

Startup (load + compiling every bucket) is reported apart; the levels run warm. The issue's goals on
2 cores: 8 clients >= 4x the tokens/s of 1 client, p50 TTFT at 8 clients <= 1 s, >= 3x transformers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

SIZES = {
    "full": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0),
}
LEVELS = (1, 4, 8, 16)


def make_checkpoint(folder: str, size: str) -> int:
    """A random tied Llama of `size` and a word-level tokenizer covering its whole vocabulary (so every
    generated id decodes); returns the parameter count."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models

    shape = SIZES[size]
    config = transformers.LlamaConfig(**shape, max_position_embeddings=2048, rms_norm_eps=1e-5,
                                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).float().eval()
    model.save_pretrained(folder)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, shape["vocab_size"])}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>", unk_token="<pad>")
    fast.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def stream_one(url: str, prompt: list[int], new: int) -> tuple[float, int, float]:
    """(time to first streamed piece, completion tokens, total time) of one streamed request."""
    import requests

    started = time.perf_counter()
    first = None
    tokens = 0
    with requests.post(url + "/v1/completions", stream=True, timeout=600, json={
            "prompt": prompt, "max_tokens": new, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text}")
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif first is None and event["choices"]:
                first = time.perf_counter() - started
    return first if first is not None else float("nan"), tokens, time.perf_counter() - started


def run_level(url: str, engine, prompts: list[list[int]], clients: int, per_client: int, new: int) -> dict:
    """`clients` threads, each streaming `per_client` requests in turn."""
    results: list[tuple] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for j in range(per_client):
            prompt = prompts[(c * per_client + j) % len(prompts)]
            out = stream_one(url, prompt, new)
            with lock:
                results.append((prompt, *out))

    steps, rows = engine.stats.decode_steps, engine.stats.decode_rows
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ttft = np.asarray([r[1] for r in results])
    tokens = sum(r[2] for r in results)
    return {"clients": clients, "requests": len(results), "tokens": tokens, "wall": wall,
            "tok_s": tokens / wall, "ttft_p50": float(np.quantile(ttft, 0.5)), "ttft_p99": float(np.quantile(ttft, 0.99)),
            "batch": (engine.stats.decode_rows - rows) / max(1, engine.stats.decode_steps - steps),
            "done": [(r[0], r[2]) for r in results]}


def transformers_sequential(folder: str, jobs: list[tuple[list[int], int]]) -> dict:
    """transformers' greedy generate, one request at a time, each making exactly the server's token count."""
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).float().eval()
    ttft, tokens = [], 0
    with torch.no_grad():
        model.generate(torch.tensor([jobs[0][0]]), max_new_tokens=2, do_sample=False)  # warm
        started = time.perf_counter()
        for prompt, n in jobs:
            if n == 0:
                continue
            ids = torch.tensor([prompt])
            t = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                           pad_token_id=0)
            ttft.append(time.perf_counter() - t)
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)
            tokens += n
        # The first-token generates above are not serving work: time them out of the total.
        wall = time.perf_counter() - started - sum(ttft)
    return {"tok_s": tokens / wall, "ttft_p50": float(np.quantile(ttft, 0.5)), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default=os.environ.get("ZOOHUB_BENCH_SIZE", "full"))
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens per request")
    parser.add_argument("--new", type=int, default=64, help="completion tokens per request at most")
    parser.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    parser.add_argument("--slots", type=int, default=16, help="engine slots (the largest level fits)")
    parser.add_argument("--prefill-chunk", type=int, default=64, help="engine prompt tokens per prefill step")
    parser.add_argument("--baseline", type=int, default=4, help="requests transformers serves for the ratio")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrent clients, comma separated")
    parser.add_argument("--backend", choices=("jax", "numpy"), default="jax")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    import zoohub
    from zoohub.serve import ServerThread, load_served

    zoohub.set_backend(args.backend)
    vocab = SIZES[args.size]["vocab_size"]
    rng = np.random.default_rng(0)
    prompts = [[1] + rng.integers(3, vocab, args.prompt - 1).tolist() for _ in range(max(levels) * args.requests)]
    with tempfile.TemporaryDirectory() as folder:
        params = make_checkpoint(folder, args.size)
        started = time.perf_counter()
        served = load_served(folder, name="bench", slots=args.slots, context=args.prompt + args.new,
                             prefill_chunk=args.prefill_chunk)
        loaded = time.perf_counter() - started
        server = ServerThread([served]).start()
        ready = time.perf_counter() - started
        engine = served.engine
        served_chunk = engine.prefill_chunk
        try:
            stream_one(server.url, prompts[0], 4)  # the HTTP path once, untimed
            rows = [run_level(server.url, engine, prompts, c, args.requests, args.new) for c in levels]
        finally:
            server.stop()
        del served, engine
        jobs = [job for row in rows for job in row["done"]]
        reference = transformers_sequential(folder, jobs[:args.baseline])

    print(f"\n{args.size}: {params / 1e6:.1f}M parameters, {args.backend} float32, {args.slots} slots of "
          f"{args.prompt + args.new} tokens, prefill chunk {served_chunk}, prompts {args.prompt} tokens, <= {args.new} new, "
          f"{args.requests} requests per client; {os.cpu_count()} CPUs")
    print(f"startup: load {loaded:.1f} s, ready (every bucket compiled) {ready:.1f} s\n")
    print("| clients | requests | tokens | aggregate tok/s | x 1 client | TTFT p50 (s) | TTFT p99 (s) | mean decode batch | x transformers |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = rows[0]["tok_s"]
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['tokens']} | {r['tok_s']:.1f} | {r['tok_s'] / base:.2f} | "
              f"{r['ttft_p50']:.3f} | {r['ttft_p99']:.3f} | {r['batch']:.2f} | {r['tok_s'] / reference['tok_s']:.2f} |")
    print(f"| transformers generate, one at a time | {len(jobs[:args.baseline])} | {reference['tokens']} | "
          f"{reference['tok_s']:.1f} | | {reference['ttft_p50']:.3f} | | 1 | 1.00 |")


if __name__ == "__main__":
    main()
