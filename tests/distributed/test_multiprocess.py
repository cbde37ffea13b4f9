"""Two jax.distributed processes x 4 CPU devices on 127.0.0.1, run as they would on two hosts: loading,
logits, generation, fine-tuning (data-parallel, tensor-parallel, FSDP), checkpoints, resume and saving
all give what one process gives; a process that dies makes the other fail, not hang.

One launch of worker.py does every check of a working run (each fit compiles once per process, which is
most of the time); the single-process references are computed here, with no mesh."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import zoohub
from tests.distributed.launch import check, launch
from tests.tiny import SENTENCES

# One worker runs the module: its module fixtures (a whole 2-process run) must not run once per xdist worker.
pytestmark = pytest.mark.xdist_group("distributed")

TEXTS = (SENTENCES * 3)[:16]
FIT = {"batch_size": 8, "learning_rate": 1e-2, "seed": 1, "verbose": False}  # 2 steps per epoch
IDS = np.random.default_rng(0).integers(3, 97, size=(2, 7))
TOKENS = {"input_ids": IDS, "attention_mask": np.ones_like(IDS)}
TOLERANCE = 1e-4


def _inputs(out, preset) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "inputs.json").write_text(json.dumps({
        "preset": str(preset), "texts": TEXTS, "fit_args": FIT,
        "tokens": {k: v.tolist() for k, v in TOKENS.items()}}))


@pytest.fixture(scope="module")
def llama(tiny):
    return tiny.folder("llama", "causal_lm")


# Both runs are kept for the worker's life: an xdist worker that does not yet know its next test tears
# module fixtures down, and the two-process run alone takes over a minute on 2 cores.
_RUNS: dict = {}


@pytest.fixture(scope="module")
def together(llama, tmp_path_factory):
    """(output folder, [result of process 0, result of process 1]) of the whole two-process run."""
    if "together" not in _RUNS:
        out = tmp_path_factory.mktemp("two-processes")
        _inputs(out, llama)
        _RUNS["together"] = out, check(launch("all", out, timeout=300))
    return _RUNS["together"]


@pytest.fixture(scope="module")
def alone(llama):
    """The same work in one process on one device: logits, tokens, and the step losses of 3 epochs."""
    if "alone" not in _RUNS:
        lm = zoohub.CausalLM.from_preset(llama)
        _RUNS["alone"] = {"task": lm, "logits": lm.logits(TOKENS),
                          "generate": lm.generate_tokens(TOKENS, max_new_tokens=8, stop_token_ids=[]),
                          "steps": lm.fit(TEXTS, epochs=3, **FIT)["step_loss"]}
    return _RUNS["alone"]


def _close(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def test_each_process_holds_only_its_own_shards(together):
    _, results = together
    starts = []
    for r in results:
        assert (r["devices"], r["local_devices"]) == (8, 4)
        q = r["load"]  # q_proj over model=8 spanning both processes: [layers, 48 rows, 48]
        assert q["spec"] == [None, "model", None] and q["shape"] == [2, 48, 48]
        assert q["local_shards"] == [[2, 6, 48]] * 4
        starts.append({rows for _, rows, _ in q["local_starts"]})
    assert not starts[0] & starts[1] and starts[0] | starts[1] == set(range(0, 48, 6))


def test_logits_and_generation_match_one_process(together, alone):
    _, results = together
    for r in results:
        assert _close(r["logits"], alone["logits"]) < TOLERANCE
        assert r["generate"] == alone["generate"] and len(r["generate"][0]) == 8


@pytest.mark.parametrize("kind", ["fit_data", "fit_tensor", "fit_fsdp"])
def test_fit_matches_one_process(together, alone, kind):
    _, results = together
    assert alone["steps"][1] < alone["steps"][0]  # it learns
    for r in results:
        assert _close(r[kind], alone["steps"][:2]) < TOLERANCE


def test_fsdp_shards_params_and_optimizer_state_over_the_data_axis(together):
    _, results = together
    for r in results:
        # data=4 x model=2: q_proj rows over "model", columns over "data"; each device 1/8 of it.
        for q in (r["fsdp_param"], r["optimizer"]["mu_q"]):
            assert q["spec"] == [None, "model", "data"] and q["local_shards"] == [[2, 24, 12]] * 4
        # Replicated, each of the 4 devices here would hold the whole state; fully sharded, a device
        # holds 1/8 of each tensor (the 97-row vocabulary tables 1/4: 97 does not split over model=2).
        per_device = r["optimizer"]["bytes_here"] / 4
        assert per_device < r["optimizer"]["total_bytes"] / 5


def test_checkpoints_resume_and_one_writer(together, alone, llama):
    out, results = together
    for r in results:  # resumed from the epoch-1 checkpoint the two processes wrote: as if uninterrupted
        assert _close(r["fit_fsdp_resumed"], alone["steps"][:4]) < TOLERANCE
    assert [r["writes"] for r in results] == [5, 0]  # 2 checkpoints (preset + state each), 1 preset
    assert results[0]["saved"] == results[1]["saved"] == str(out / "final")
    assert not [p.name for p in out.rglob(".*")]  # no temp folders or pointer files left
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["epoch"] == 2

    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(out / "final").float().eval()
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(IDS)).logits.numpy()
    assert _close(results[0]["final_logits"], ref) < TOLERANCE

    # The two-process checkpoint resumes in one process too, and goes on exactly.
    history = alone["task"].fit(TEXTS, epochs=3, checkpoint_dir=out / "checkpoints", resume=True, **FIT)
    assert _close(history["step_loss"], alone["steps"]) < TOLERANCE


# What the survivor says: the collective's broken connection (a JaxRuntimeError raised in Python, where
# the user's code can catch it; closed or reset, by timing), or JAX's coordination service naming the
# task that stopped sending heartbeats.
SAYS = {"exit": r"JaxRuntimeError: .*Gloo \w+ failed: .*(closed|reset) by peer",
        "freeze": r"tasks are unhealthy \(stopped sending heartbeats\)"}


@pytest.mark.parametrize("how", ["exit", "freeze"])
def test_a_dead_process_makes_the_other_fail_not_hang(llama, tmp_path, how):
    """Process 1 exits (its sockets close) or freezes (SIGSTOP: sockets open, no heartbeats) after a
    first joint computation; process 0, computing on, must stop with an error soon after the heartbeat
    timeout (8 s here: shorter ones are missed on a loaded machine): JAX's runtime ends it, never waits."""
    _inputs(tmp_path, llama)
    finished = launch(how, tmp_path, timeout=90, args=("8",), wait_for=(0,))
    survivor = finished[0]
    assert survivor.returncode not in (0, None), survivor.stderr[-2000:]
    assert survivor.result is not None, survivor.stderr[-2000:]  # it got as far as the first joint call
    assert survivor.result["calls_after"] == 0  # no computation went on without process 1
    assert survivor.seconds < 45
    assert re.search(SAYS[how], survivor.stderr), survivor.stderr[-2000:]
    assert finished[1].returncode == (3 if how == "exit" else None)  # a frozen one is killed by launch()
