"""Launch the same script as N cooperating jax.distributed processes on 127.0.0.1, as it would run on N
hosts: each its own process id and 4 virtual CPU devices, a free port for the coordinator, a wall-clock
bound, and every process reaped whatever happens."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
DEVICES_PER_PROCESS = 4


@dataclass
class Finished:
    """One process's exit: code, seconds after launch, its output, and what it wrote to its result file."""

    returncode: int | None  # None: killed at the time limit
    seconds: float
    stdout: str
    stderr: str
    result: dict | None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, out: Path, *, processes: int = 2, timeout: float = 120, env: dict | None = None,
           args: tuple[str, ...] = (), wait_for: tuple[int, ...] | None = None) -> list[Finished]:
    """Run `worker.py scenario out args...` as `processes` processes; return how each ended once the
    ranks in `wait_for` (default: all) have ended or `timeout` seconds have passed; the rest are killed."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # Optimisation level 0 halves XLA's compile time of these tiny programs (the compiles are most of
    # the time here, two processes compiling at once on two cores); the math is the same HLO.
    flags = f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS} --xla_backend_optimization_level=0"
    base = {**os.environ, "XLA_FLAGS": flags,
            "JAX_PLATFORMS": "cpu", "ZOOHUB_BACKEND": "jax", "ZOOHUB_QUIET": "1", "PYTHONPATH": str(ROOT),
            "ZOOHUB_COORDINATOR": f"127.0.0.1:{port}", "ZOOHUB_NUM_PROCESSES": str(processes), **(env or {})}
    started = time.monotonic()
    procs, logs = [], []
    try:
        for rank in range(processes):
            log = (open(out / f"stdout-{rank}.txt", "w+"), open(out / f"stderr-{rank}.txt", "w+"))
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), scenario, str(out), *args], cwd=ROOT, stdout=log[0], stderr=log[1],
                env={**base, "ZOOHUB_PROCESS_ID": str(rank)}, start_new_session=True))
        ended: dict[int, tuple[int | None, float]] = {}
        waited = set(range(processes) if wait_for is None else wait_for)
        while not waited <= set(ended):
            for rank, p in enumerate(procs):
                if rank not in ended and p.poll() is not None:
                    ended[rank] = (p.returncode, time.monotonic() - started)
            if time.monotonic() - started > timeout:
                break
            time.sleep(0.05)
    finally:
        for rank, p in enumerate(procs):  # always reaped: the whole process group, then waited for
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    finished = []
    for rank, (stdout, stderr) in enumerate(logs):
        stdout.seek(0), stderr.seek(0)
        result_file = out / f"result-{rank}.json"
        code, seconds = ended.get(rank, (None, time.monotonic() - started))
        finished.append(Finished(code, seconds, stdout.read(), stderr.read(),
                                 json.loads(result_file.read_text()) if result_file.exists() else None))
        stdout.close(), stderr.close()
    return finished


def check(finished: list[Finished]) -> list[dict]:
    """Every process exited 0; their results."""
    for rank, f in enumerate(finished):
        assert f.returncode == 0, f"process {rank} ended with {f.returncode} after {f.seconds:.0f} s:\n{f.stderr[-3000:]}"
    return [f.result for f in finished]
