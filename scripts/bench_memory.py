"""Memory held by a loaded decoder, and its decode speed: a SmolLM2-135M-shaped random Llama (made by
transformers here, float32, 538 MB of weights) loaded with `zoohub.CausalLM.from_preset` on jax.

    python scripts/bench_memory.py                       # this checkout, 3 runs
    python scripts/bench_memory.py --also ../old-zoohub  # and another checkout, alternating runs

Each run is a fresh process that loads the checkpoint, generates (the first call compiles), then
reads its anonymous resident memory (RssAnon: heap and device buffers, not the memory-mapped file)
and decodes 64 tokens at batch 1. A bare `import zoohub` process is the baseline; the figure is
(RssAnon after generating - bare RssAnon) / weight bytes: 1.0 would be one copy of the weights.
Only the public API is used, so older checkouts run the same code.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r"""
import json, sys, time
def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
import zoohub
if sys.argv[1] == "bare":
    print(json.dumps({"rss_anon": rss_anon()}))
    raise SystemExit
folder = sys.argv[1]
ids = {"input_ids": [[1, 5, 9, 14, 22, 7, 3, 40]]}
start = time.perf_counter()
lm = zoohub.CausalLM.from_preset(folder)
loaded = time.perf_counter()
lm.generate_tokens(ids, max_new_tokens=8, stop_token_ids=[])
first = time.perf_counter()
held = rss_anon()
runs = []
for _ in range(3):
    t = time.perf_counter()
    out = lm.generate_tokens(ids, max_new_tokens=64, stop_token_ids=[])
    runs.append(len(out[0]) / (time.perf_counter() - t))
print(json.dumps({"rss_anon": held, "load_s": loaded - start, "first_call_s": first - loaded,
                  "decode_tok_s": max(runs)}))
"""


def probe(repo: str, arg: str) -> dict:
    env = {**os.environ, "PYTHONPATH": repo, "ZOOHUB_BACKEND": "jax", "ZOOHUB_QUIET": "1", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", PROBE, arg], capture_output=True, text=True, env=env, cwd=repo)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--also", help="another zoohub checkout to measure the same way (e.g. the previous commit)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checkpoint", help="reuse a folder made by an earlier run")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from scripts.bench_generate import make_checkpoint

    folder = args.checkpoint or tempfile.mkdtemp(prefix="smollm2-shaped-")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        make_checkpoint(folder)
    weight_bytes = os.path.getsize(os.path.join(folder, "model.safetensors"))
    repos = {"this": ROOT} | ({"also": os.path.abspath(args.also)} if args.also else {})
    results: dict[str, list] = {name: [] for name in repos}
    for _ in range(args.runs):
        for name, repo in repos.items():  # alternate, so drift in the machine hits both alike
            bare = probe(repo, "bare")["rss_anon"]
            r = probe(repo, folder)
            r["weights_x"] = (r["rss_anon"] - bare) / weight_bytes
            results[name].append(r)
    print(f"checkpoint: {folder} ({weight_bytes / 1e6:.0f} MB of float32 weights)")
    for name, runs in results.items():
        def span(key, fmt):
            values = [r[key] for r in runs]
            return f"{fmt.format(min(values))}-{fmt.format(max(values))}"
        print(f"{name:5s} {repos[name]}: held {span('weights_x', '{:.2f}')}x the weights, "
              f"load {span('load_s', '{:.2f}')} s, first call {span('first_call_s', '{:.2f}')} s, "
              f"decode {span('decode_tok_s', '{:.1f}')} tok/s (batch 1, best of 3 per run)")


if __name__ == "__main__":
    main()
