"""`zoohub generate` on a seq2seq preset and `zoohub translate` with T5's task prefixes."""
from __future__ import annotations

import json

import zoohub
from tests.seq2seq.conftest import SOURCES
from zoohub.backend import using
from zoohub.cli import main


def test_generate_and_translate_on_a_t5_folder(tiny, tmp_path, capsys):
    folder, _, _ = tiny("t5", "seq2seq_lm")
    local = tmp_path / "t5"
    local.mkdir()
    for f in folder.iterdir():
        (local / f.name).write_bytes(f.read_bytes())
    config = json.loads((local / "config.json").read_text())
    config["task_specific_params"] = {"translation_en_to_de": {"prefix": "translate English to German: "}}
    (local / "config.json").write_text(json.dumps(config))
    with using("numpy"):
        model = zoohub.Seq2SeqLM.from_preset(local)
        expected = model.generate(SOURCES[0], max_new_tokens=4)
        translated = model.generate("translate English to German: " + SOURCES[0], max_new_tokens=4)
        assert model.translate(SOURCES[0], source_lang="English", target_lang="de", max_new_tokens=4) == translated
        main(["generate", str(local), SOURCES[0], "--max-new-tokens", "4", "--backend", "numpy"])
        assert capsys.readouterr().out == expected + "\n"
        main(["translate", str(local), SOURCES[0], "--source-lang", "en", "--target-lang", "de", "--max-new-tokens", "4",
              "--backend", "numpy"])
        assert capsys.readouterr().out == translated + "\n"
        # no prefix for en -> fr: a clear error and a failing exit status, not an untranslated output
        assert main(["translate", str(local), SOURCES[0], "--source-lang", "en", "--target-lang", "fr",
                     "--backend", "numpy"]) != 0
        assert "translation_en_to_de" in capsys.readouterr().err
