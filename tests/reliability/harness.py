"""Pieces shared by the kill, concurrency, disk-full and network-fault tests: tiny presets built
without transformers, the loopback servers of tests/hub, isolated caches, and victims run as
subprocesses to be killed or limited. The fixtures that use them are in conftest.py.

Victims are short `python -c` programs that print "ready" right before the operation under test,
so a kill lands in the operation and not in interpreter start-up. Nothing touches the internet.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "hub"))  # the loopback servers (stdlib only)
# Keep huggingface_hub away from any real token or cache on this machine (read at its import).
os.environ.setdefault("HF_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "zoohub-tests-hf-home"))

from hubserver import Blob, HubServers, Repo  # noqa: E402

CONFIG = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 97,
          "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 80,
          "max_position_embeddings": 40, "layer_norm_eps": 1e-7, "num_labels": 2}
TOKENS = np.array([[2, 11, 40, 7, 3, 0], [2, 9, 3, 0, 0, 0]], np.int32)  # two rows, padded with 0


def tokenizer_json(path: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab += [f"[unused{i}]" for i in range(97 - len(vocab))]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.save(str(path))


def make_preset(folder: Path, seed: int, **config) -> Path:
    """A complete tiny BERT classifier preset (config, safetensors, tokenizer, zoohub.json), saved by
    zoohub itself from random weights; `seed` makes versions that differ in every tensor."""
    import zoohub
    from zoohub.backbones import get_family
    from zoohub.backend import using
    from zoohub.presets.weights import write_weights

    hf = {**CONFIG, **config}
    family = get_family("bert")
    rng = np.random.default_rng(seed)
    source = folder.with_name(folder.name + ".source")
    source.mkdir(parents=True)
    shapes = family.shapes(family.config_class.from_hf(hf))
    write_weights({k: rng.normal(0, 0.2, size=s).astype(np.float32) for k, s in shapes.items()}, source)
    (source / "config.json").write_text(json.dumps(hf))
    tokenizer_json(source / "tokenizer.json")
    (source / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizerFast"}))
    with using("numpy"):
        zoohub.TextClassifier.from_preset(source, seed=seed).save_to_preset(folder)
    return folder


def logits(folder: Path | str) -> np.ndarray:
    """The classifier's outputs on TOKENS, loaded on the numpy backend (fast, no jax)."""
    import zoohub
    from zoohub.backend import using

    with using("numpy"):
        return np.asarray(zoohub.TextClassifier.from_preset(folder).logits({"input_ids": TOKENS}))


def files_of(folder: Path) -> dict[str, bytes]:
    """Visible files (relative path -> bytes); hidden temp or lock files are not part of a preset."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def leftovers(parent: Path, name: str) -> list[str]:
    """Temp folders a writer left beside `parent / name`."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# -- subprocess victims -------------------------------------------------------------------------

def spawn(code: str, *args, env: dict | None = None) -> subprocess.Popen:
    """Start `python -c code args...` in the repository root; its stdout is read line by line."""
    environ = {**os.environ, "ZOOHUB_BACKEND": "numpy", "ZOOHUB_QUIET": "1", **(env or {})}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=environ,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


ZYGOTE = """
import json, os, signal, sys, traceback
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the victims
exec(sys.argv[1])  # imports every victim needs; nothing here may start threads (jax: no backend yet)
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.close(0)
        sys.stdout = sys.stderr = open(request["log"], "w", buffering=1)
        os.dup2(sys.stdout.fileno(), 1)
        os.dup2(sys.stdout.fileno(), 2)
        sys.argv = [sys.argv[0], *request["args"]]
        try:
            exec(request["code"], {"__name__": "__victim__"})
        except BaseException:
            traceback.print_exc()
            sys.stdout.flush()
            os._exit(1)
        sys.stdout.flush()
        os._exit(0)
    print(pid, flush=True)
"""


class Zygote:
    """A process that imports what victims need once, then forks one victim per request.

    For victims whose imports cost more than the operation under test (jax: about a second per
    process): a forked victim starts in milliseconds. It is still its own process, killed with
    SIGKILL by pid. The zygote never initialises the jax backend, so forking it is safe."""

    def __init__(self, preamble: str, folder: Path, env: dict | None = None) -> None:
        self.folder, self.count = folder, 0
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(ZYGOTE, preamble, env=env)
        wait_for(self.proc)

    def launch(self, code: str, *args) -> "Forked":
        self.count += 1
        log = self.folder / f"victim{self.count}.log"
        request = {"code": code, "args": [str(a) for a in args], "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return Forked(int(self.proc.stdout.readline()), log)

    def close(self) -> None:
        self.proc.stdin.close()  # the zygote's loop ends
        self.proc.wait(timeout=30)


class Forked:
    """A victim forked by a Zygote, with the parts of Popen the trials use; its stdout is a log file."""

    def __init__(self, pid: int, log: Path) -> None:
        self.pid, self.log, self.returncode = pid, log, None
        self.stdout = self
        self._read = 0

    def readline(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_text() if self.log.exists() else ""
            end = text.find("\n", self._read)
            if end >= 0:
                line, self._read = text[self._read:end + 1], end + 1
                return line
            if not self.alive():
                return text[self._read:]
            time.sleep(0.001)
        return ""

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def communicate(self, timeout: float = 60) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        text = self.log.read_text() if self.log.exists() else ""
        rest, self._read = text[self._read:], len(text)
        done = "done" in text.split()
        self.returncode = 0 if done else (None if self.alive() else -9)
        return rest, "" if done else f"(victim log {self.log})\n{text[-3000:]}"


def wait_for(proc: subprocess.Popen, word: str = "ready") -> None:
    line = proc.stdout.readline()
    if line.strip() != word:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"victim did not say {word!r} (said {line!r}); stderr:\n{err[-3000:]}")


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    """The stdout of a victim that must succeed."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"victim failed ({proc.returncode}):\n{err[-3000:]}"
    return out


def measure(launch: Callable[[int], subprocess.Popen], width: int = 2) -> float:
    """Seconds from "ready" to "done" of undisturbed runs, `width` at once as the trials run (victims
    -1, -2, ...): the span the kill delays are drawn from."""
    procs = [launch(-1 - i) for i in range(width)]
    spans = []
    for proc in procs:
        wait_for(proc)
        start = time.monotonic()
        wait_for(proc, "done")
        spans.append(time.monotonic() - start)
        finish(proc)
    return max(spans)


class KillTrials:
    """Victims SIGKILLed after a delay drawn (seeded, so runs repeat) from [0, span] after "ready".

    Victims run `width` at a time (each with its own target; the machine's cores are otherwise idle
    while one waits on fsync). `outcomes` counts what the checks found afterwards ("old", "new", ...);
    `killed` counts victims the signal reached before they said "done"."""

    def __init__(self, name: str, seed: int) -> None:
        self.name, self.rng = name, random.Random(seed)
        self.outcomes: dict[str, int] = {}
        self.killed = self.trials = 0
        self.span = 0.0
        self.start = time.monotonic()

    def run(self, trials: int, launch: Callable[[int], subprocess.Popen], check: Callable[[int], str],
            width: int = 2) -> None:
        """`launch(i)` starts victim i; after its kill, `check(i)` inspects what it left and names the outcome.

        The delays cover the measured span and a quarter more, so that some kills come after the
        operation is complete (the last step of a write is its swap into place)."""
        self.span = measure(launch, width)
        delays = [self.rng.uniform(0, 1.25 * self.span) for _ in range(trials)]
        for first in range(0, trials, width):
            batch = list(range(first, min(trials, first + width)))
            procs = {i: launch(i) for i in batch}
            said: dict[int, object] = {}  # victim -> its stdout, or the exception its watcher met
            threads = [threading.Thread(target=self._kill, args=(procs[i], delays[i], said, i)) for i in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for i in batch:
                if isinstance(said[i], BaseException):
                    raise said[i]
                self.killed += "done" not in said[i].split()
            for i in batch:
                outcome = check(i)
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.trials += trials

    @staticmethod
    def _kill(proc: subprocess.Popen, delay: float, said: dict, i: int) -> None:
        try:
            wait_for(proc)
            time.sleep(delay)
            proc.kill()  # SIGKILL
            out, err = proc.communicate(timeout=60)
            if proc.returncode not in (0, -9) or "Traceback" in out:
                raise AssertionError(f"victim failed ({proc.returncode}) instead of being killed:\n{err or out}")
            said[i] = out
        except BaseException as e:  # re-raised in the test's thread
            proc.kill()
            said[i] = e

    def report(self) -> str:
        seconds = time.monotonic() - self.start
        found = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        line = (f"RELIABILITY | {self.name} | {self.trials} | {self.killed} killed mid-operation "
                f"(span {self.span * 1000:.0f} ms); found afterwards: {found}; nothing lost | {seconds:.1f} s")
        print(line)
        return line


# -- the loopback hub ------------------------------------------------------------------------

def publish_to_hub(hub: HubServers, repo_id: str, folder: Path) -> str:
    """Put a preset folder into the loopback hub as one commit (safetensors as LFS); the commit sha."""
    files = {}
    for name, data in files_of(folder).items():
        lfs = name.endswith(".safetensors")
        if lfs:
            hub.state.lfs[hashlib.sha256(data).hexdigest()] = data
        files[name] = Blob(data, lfs)
    with hub.state.lock:
        hub.state.repos[repo_id] = Repo()
        return hub.state.commit(repo_id, files, message="publish")
