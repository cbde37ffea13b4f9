"""Suite-wide settings: quiet progress bars, no network, CPU only."""
import os
import tempfile
from pathlib import Path

os.environ.setdefault("ZOOHUB_QUIET", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The suite's models are tiny, so XLA's compile time dominates its jax tests; its backend optimisation passes
# buy nothing at these sizes. Level 0 cut the jax decoder and seq2seq tests from 169 s to 112 s on 2 cores.
# (Launched processes that set XLA_FLAGS themselves keep their own.)
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
# Hermetic: nothing a test downloads, uploads or verifies lands in the user's caches.
os.environ.setdefault("ZOOHUB_HOME", tempfile.mkdtemp(prefix="zoohub-tests-home-"))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_backend():
    """A test that selects a backend does not leak it into the next one."""
    from zoohub import backend

    before = backend._selected
    yield
    backend._selected = before


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    """Share compiled programs between the tests' fresh models of the same shapes (an XLA compile is
    seconds here, and compiles dominate the training and vision tests)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Each family's tiny checkpoint (from `Family.recipe`), built by transformers on first use."""
    from tests.tiny import TinyCheckpoints

    return TinyCheckpoints(tmp_path_factory.mktemp("tiny"))


# Modules whose module-scoped fixtures are costly (servers, fitted models, launched processes): each runs
# on one xdist worker (--dist loadgroup in scripts/test.sh), so those fixtures are built once, not per worker.
ONE_WORKER_MODULES = ("training/test_resume_lora.py", "training/test_fit.py", "hub/test_hub_gguf.py",
                      "hub/test_hub_hf_failures.py", "reliability/test_disk_full.py", "reliability/test_kill.py",
                      "reliability/test_concurrency.py", "reliability/test_network_faults.py", "cli/test_cli.py")


def pytest_collection_modifyitems(items):
    root = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        if root in path.parents and path.relative_to(root).as_posix() in ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(path.stem))
