"""Suite-wide settings: quiet progress bars, no network, CPU only."""
import os

os.environ.setdefault("ZOOHUB_QUIET", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
