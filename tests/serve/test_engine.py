"""The batching engine on its own: greedy tokens equal transformers' generate, alone or batched with
others (more requests than slots, prompts prefilled in several chunks), steady traffic compiles
nothing new, a cancelled request frees its slot, and the numpy backend serves the same tokens."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.serve.conftest import CHUNK, CONTEXT, SLOTS, post, run_requests
from zoohub.serve.engine import Engine, QueueFull, Request

torch = pytest.importorskip("torch")

LENGTHS = (3, 17, 45, 70, 9, 33)   # 45 and 70 tokens: prefilled in 2 and 3 chunks of 32
MAX_TOKENS = (20, 12, 20, 9, 16, 20)


def prompts(vocab: int = 97) -> list[list[int]]:
    rng = np.random.default_rng(5)
    return [[1] + rng.integers(3, vocab, n - 1).tolist() for n in LENGTHS]


def reference(torch_llama, prompt: list[int], max_tokens: int) -> list[int]:
    """transformers' greedy generate: new tokens up to and including EOS (id 2)."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = torch_llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                   do_sample=False, eos_token_id=2, pad_token_id=0)[0, len(prompt):].tolist()
    return out[:out.index(2) + 1] if 2 in out else out


@pytest.fixture(scope="module")
def references(torch_llama):
    return [reference(torch_llama, p, m) for p, m in zip(prompts(), MAX_TOKENS)]


def greedy(prompt, max_tokens, **kw) -> Request:
    return Request(prompt=prompt, max_tokens=max_tokens, stop_token_ids=frozenset({2}), **kw)


def test_greedy_alone_and_batched_equal_transformers(server, engine, references):
    # Alone: one request at a time.
    alone = [run_requests(engine, [greedy(p, m)])[0] for p, m in zip(prompts(), MAX_TOKENS)]
    for got, ref in zip(alone, references):
        assert got.tokens == ref
        assert got.finish == ("stop" if ref[-1] == 2 else "length")
    # Together: 6 requests on 4 slots; the last two wait, then join the running batch.
    chunks_before = engine.stats.prefill_chunks
    together = run_requests(engine, [greedy(p, m) for p, m in zip(prompts(), MAX_TOKENS)])
    assert [r.tokens for r in together] == references
    assert engine.stats.prefill_chunks - chunks_before == sum(-(-n // CHUNK) for n in LENGTHS)
    assert engine.running() == 0 and engine.queued() == 0


def test_logprobs_are_the_models(server, engine, torch_llama):
    prompt = prompts()[2]
    got = run_requests(engine, [greedy(prompt, 5, logprobs=3)])[0]
    ids = torch.tensor([prompt + got.tokens])
    with torch.no_grad():
        logp = torch.log_softmax(torch_llama(ids).logits[0].float(), -1).numpy()
    want = [logp[len(prompt) - 1 + i, t] for i, t in enumerate(got.tokens)]
    np.testing.assert_allclose(got.logprobs, want, atol=1e-4)


def test_steady_traffic_compiles_nothing(server, engine):
    decode, prefill = engine._decode, engine._prefill
    before = decode._cache_size(), prefill._cache_size()
    assert before == (len(engine.batches) * len(engine.windows), len(engine.chunks))
    run_requests(engine, [greedy(p, 30) for p in prompts()] + [greedy(prompts()[3] * 1, CONTEXT - 70)])
    assert (decode._cache_size(), prefill._cache_size()) == before


def test_seeded_sampling_repeats_and_ignores_the_batch(server, engine):
    def sampled(seed):
        return greedy(prompts()[1], 15, greedy=False, temperature=1.3, top_p=0.9, seed=seed)

    alone = run_requests(engine, [sampled(7)])[0].tokens
    crowd = run_requests(engine, [greedy(p, 15) for p in prompts()[:3]] + [sampled(7), sampled(8)])
    assert crowd[3].tokens == alone
    assert crowd[4].tokens != alone


def test_cancel_frees_the_slot_at_once(server, engine):
    r = Request(prompt=prompts()[0], max_tokens=CONTEXT - 10)   # no stop token: only the cancel ends it
    got = []
    r.sink = got.append
    engine.submit(r)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.005)
    r.cancel()
    while engine.running() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert engine.running() == 0
    assert got[-1] == ("done", "cancelled") and r.generated < r.max_tokens


def test_submit_refuses_what_cannot_fit(server, engine):
    with pytest.raises(Exception, match="context of 128 tokens"):
        engine.submit(greedy([1] * 100, 29))
    with pytest.raises(Exception, match="no tokens"):
        engine.submit(greedy([], 5))


def test_queue_full_raises(lm):
    idle = Engine(lm, slots=2, context=64, max_queue=1)   # never started: requests stay queued
    idle.submit(greedy([1, 5], 4))
    with pytest.raises(QueueFull):
        idle.submit(greedy([1, 5], 4))


def test_numpy_backend_serves(llama_folders, references):
    import zoohub
    from zoohub.serve import ServerThread, load_served

    zoohub.set_backend("numpy")
    s = load_served(str(llama_folders["tiny-a"]), name="np", slots=2, context=CONTEXT, prefill_chunk=CHUNK)
    assert s.task.backend == "numpy" and s.engine.backend == "numpy"
    srv = ServerThread([s]).start()
    try:
        got = run_requests(s.engine, [greedy(p, m) for p, m in list(zip(prompts(), MAX_TOKENS))[:3]])
        assert [r.tokens for r in got] == references[:3]
        r = post(srv.url + "/v1/completions", {"prompt": prompts()[0], "max_tokens": MAX_TOKENS[0], "temperature": 0})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == s.task._decode(references[0])
    finally:
        srv.stop()
    assert "jax" not in type(s.engine._k).__module__


# Families whose attention differs where the engine's rows could go wrong: a sliding window shorter
# than the prompts (mistral), soft-caps with alternating windows (gemma2), learned positions (gpt2; opt
# with its offset of 2), ALiBi (bloom). On numpy: no compiles, so the suite stays fast.
FAMILIES = ("mistral", "gemma2", "gpt2", "opt", "bloom")


@pytest.mark.parametrize("model_type", FAMILIES)
def test_numpy_engine_rows_equal_transformers(tiny, model_type):
    import zoohub
    from zoohub.serve.engine import Engine

    folder, torch_model, _ = tiny(model_type, "causal_lm")
    zoohub.set_backend("numpy")
    lm = zoohub.CausalLM.from_preset(folder)
    engine = Engine(lm, slots=2, prefill_chunk=16).start(warm=False)
    try:
        eos = set(lm.default_stop_token_ids())
        rng = np.random.default_rng(3)
        jobs = [(rng.integers(3, 97, n).tolist(), m) for n, m in ((5, 12), (40, 9), (23, 12))]
        got = run_requests(engine, [Request(prompt=p, max_tokens=m, stop_token_ids=frozenset(eos)) for p, m in jobs])
    finally:
        engine.stop()
    for (prompt, m), r in zip(jobs, got):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            want = torch_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=m, do_sample=False,
                                        eos_token_id=sorted(eos) or None, pad_token_id=0)[0, len(prompt):].tolist()
        cut = next((i + 1 for i, t in enumerate(want) if t in eos), len(want))
        assert r.tokens == want[:cut], (model_type, prompt)


def test_a_failed_engine_tells_every_request_and_takes_no_more(llama_folders):
    import zoohub
    from zoohub.serve.engine import EngineStopped

    zoohub.set_backend("numpy")
    lm = zoohub.CausalLM.from_preset(llama_folders["tiny-a"])
    engine = Engine(lm, slots=1, context=64)

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    engine._prefill_call = broken
    events = [[], []]
    for i in range(2):   # the second waits for the only slot: it is told too
        engine.submit(Request(prompt=[1, 5, 9], max_tokens=4, sink=events[i].append))
    engine.start(warm=False)
    deadline = time.monotonic() + 10
    while not all(events) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(e == [("error", "the engine stopped: RuntimeError: device lost")] for e in events), events
    with pytest.raises(EngineStopped, match="device lost"):
        engine.submit(Request(prompt=[1, 5], max_tokens=2))
    with pytest.raises(RuntimeError, match="device lost"):
        engine.wait_ready(1)
    engine.stop()


def test_a_failing_sink_cancels_only_its_request(server, engine, references):
    def broken(event):
        raise RuntimeError("event loop is closed")

    bad = greedy(prompts()[1], 30)
    bad.sink = broken
    engine.submit(bad)
    got = run_requests(engine, [greedy(p, m) for p, m in zip(prompts(), MAX_TOKENS)])
    assert [r.tokens for r in got] == references
    assert bad._cancelled and bad.generated < 30 and engine.failure is None and engine.running() == 0
