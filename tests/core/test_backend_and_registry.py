"""Backend selection, numpy never importing jax, and the preset registry."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import zoohub
from zoohub import errors
from zoohub.backend import ops, using


def _run(code: str, **env) -> str:
    import os

    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


NUMPY_SCRIPT = """
    import json, sys
    import numpy as np
    {prelude}
    import zoohub
    from zoohub.backbones import get_family
    from zoohub.presets.weights import write_weights
    import pathlib, tempfile
    cfg = {{"model_type": "bert", "vocab_size": 11, "hidden_size": 6, "num_hidden_layers": 1,
           "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 7}}
    fam = get_family("bert"); c = fam.config_class.from_hf(cfg)
    d = pathlib.Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    write_weights({{k: rng.normal(size=s).astype(np.float32) for k, s in fam.shapes(c).items()}}, d)
    (d / "config.json").write_text(json.dumps(cfg))
    m = zoohub.Backbone.from_preset(d)
    out = m.predict({{"input_ids": np.array([[1, 2, 3]])}})
    print(zoohub.get_backend(), out.shape, "jax" in sys.modules)
"""


def test_numpy_backend_never_imports_jax():
    out = _run(NUMPY_SCRIPT.format(prelude=""), ZOOHUB_BACKEND="numpy")
    assert out.split() == ["numpy", "(1,", "3,", "6)", "False"]


def test_works_where_jax_is_not_installed():
    # sys.modules["jax"] = None makes `import jax` fail as if it were not installed.
    out = _run(NUMPY_SCRIPT.format(prelude='sys.modules["jax"] = None'), ZOOHUB_BACKEND="")
    assert out.split()[0] == "numpy"


def test_bad_backend_name():
    with pytest.raises(errors.BackendError, match="torch"):
        zoohub.set_backend("torch")


def test_numpy_erf_matches_jax():
    x = np.linspace(-5, 5, 2001).astype(np.float32)
    np.testing.assert_allclose(ops("numpy").erf(x), np.asarray(ops("jax").erf(x)), atol=5e-7)


def test_fit_on_numpy_is_a_clear_error():
    with using("numpy"), pytest.raises(errors.BackendError, match="jax"):
        ops().require_training("fit")


def test_registry_lists_and_suggests():
    names = zoohub.list_presets()
    assert "bert_base_en_uncased" in names
    assert all(n in names for n in zoohub.list_presets(family="bert"))
    with pytest.raises(errors.PresetNotFoundError, match="did you mean 'bert_base_en_uncased'"):
        from zoohub.presets.registry import get_preset

        get_preset("bert_base_en_uncase")


def test_registry_rejects_duplicates():
    from zoohub.presets.registry import all_presets, register_preset

    with pytest.raises(ValueError, match="already registered"):
        register_preset(all_presets()[0])


def test_every_registry_row_names_a_supported_family():
    from zoohub.backbones import supported_model_types
    from zoohub.presets.registry import all_presets

    for p in all_presets():
        assert p.family in supported_model_types(), p
        assert p.handle.startswith(("hf://", "https://", "local://")), p


def test_a_model_keeps_its_backend_when_the_selection_changes(tmp_path):
    import json

    from zoohub.backbones import get_family
    from zoohub.presets.weights import write_weights

    cfg = {"model_type": "bert", "vocab_size": 11, "hidden_size": 6, "num_hidden_layers": 1,
           "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 7}
    fam = get_family("bert")
    rng = np.random.default_rng(0)
    write_weights({k: rng.normal(size=s).astype(np.float32) for k, s in fam.shapes(fam.config_class.from_hf(cfg)).items()}, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with using("jax"):
        model = zoohub.Backbone.from_preset(tmp_path)
    inputs = {"input_ids": np.array([[1, 2, 3]])}
    with using("numpy"):
        out = model.predict(inputs)
        with pytest.raises(errors.BackendError, match="jax"):
            zoohub.Backbone.from_preset(tmp_path).fit(["a"], [0])
    assert model.backend == "jax" and out.shape == (1, 3, 6)


def test_a_stale_seeded_starter_is_replaced_by_the_bundled_one():
    """The local hub's copy of a bundled preset follows the package (a user upgrading zoohub gets the
    new starter, not the one an older version seeded)."""
    from pathlib import Path

    from zoohub.presets.resolve import resolve_preset

    folder = Path(resolve_preset("starter_bert_tiny_en"))
    bundled = Path(zoohub.__file__).parent / "data" / "starter-bert-tiny" / "config.json"
    (folder / "config.json").write_text('{"model_type": "bert", "stale": true}')
    again = Path(resolve_preset("starter_bert_tiny_en"))
    assert (again / "config.json").read_bytes() == bundled.read_bytes()
