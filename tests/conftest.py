"""Suite-wide settings: quiet progress bars, no network, CPU only."""
import os

os.environ.setdefault("ZOOHUB_QUIET", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_backend():
    """A test that selects a backend does not leak it into the next one."""
    from zoohub import backend

    before = backend._selected
    yield
    backend._selected = before
