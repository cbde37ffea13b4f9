"""CausalLM fine-tuning: loss on response tokens only (checked against transformers), LoRA + peft."""
from __future__ import annotations

import numpy as np
import pytest

import zoohub
from zoohub.errors import InputError
from zoohub.presets.weights import flatten

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RECORDS = [{"prompt": "question what is two plus two", "response": "answer four"},
           {"prompt": "question what color is the sky", "response": "answer blue"}]


def reference_loss(folder, records) -> float:
    """transformers' loss with labels -100 on prompt tokens and padding (mean over response tokens)."""
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    total, count = 0.0, 0
    for r in records:
        prompt = tok(r["prompt"])["input_ids"]
        response = tok(r["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([prompt + response])
        labels = torch.tensor([[-100] * len(prompt) + response])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()
        total += loss * len(response)
        count += len(response)
    return total / count


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_loss_is_on_response_tokens_only(decoder_dirs, family):
    lm = zoohub.CausalLM.from_preset(decoder_dirs[family])
    result = lm.evaluate(RECORDS, batch_size=2)
    assert result["loss"] == pytest.approx(reference_loss(decoder_dirs[family], RECORDS), rel=1e-4)
    assert result["perplexity"] == pytest.approx(np.exp(result["loss"]), rel=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_lora_fit_then_peft_and_merged_checkpoint(decoder_dirs, family, tmp_path):
    from peft import PeftModel

    folder = decoder_dirs[family]
    lm = zoohub.CausalLM.from_preset(folder)
    base = {k: np.array(v) for k, v in flatten(lm.params).items()}
    lm.enable_lora(rank=4, alpha=8)
    history = lm.fit(RECORDS * 4 + ["the cat sat on the mat"], epochs=3, batch_size=4, learning_rate=3e-2)
    assert history["loss"][-1] < history["loss"][0]
    flat = flatten(lm.params)
    assert all(np.array_equal(np.asarray(flat[k]), v) for k, v in base.items())

    ids = np.array([[1, 5, 9, 14, 22, 7, 3]], np.int32)
    ours = lm.logits({"input_ids": ids})
    lm.save_lora(tmp_path / "adapter")
    model = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(folder), tmp_path / "adapter")
    with torch.no_grad():
        ref = model.eval()(input_ids=torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    lm.save_to_preset(tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        ref = merged(input_ids=torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_bad_lm_data(decoder_dirs):
    lm = zoohub.CausalLM.from_preset(decoder_dirs["llama"])
    with pytest.raises(InputError, match="no labels"):
        lm.fit(["the cat"], [1])
    with pytest.raises(InputError, match="prompt"):
        lm.fit([{"prompt": "a", "response": 3}])
    with pytest.raises(InputError, match="empty"):
        lm.fit([])


def test_checkpoint_of_a_stacked_decoder_stores_no_tensor_twice(decoder_dirs, tmp_path):
    """Fully fine-tuned stacked layers are found in the epoch's preset (under per-layer names), so
    the state folder holds only the float32 masters that differ from it: none in float32."""
    from safetensors.numpy import load_file

    lm = zoohub.CausalLM.from_preset(decoder_dirs["llama"])
    lm.fit(RECORDS, epochs=1, batch_size=4, learning_rate=1e-3, checkpoint_dir=tmp_path, verbose=False)
    assert load_file(str(tmp_path / "epoch-0001.state" / "trainable.safetensors")) == {}
    again = zoohub.CausalLM.from_preset(decoder_dirs["llama"])
    history = again.fit(RECORDS, epochs=1, batch_size=4, learning_rate=1e-3, checkpoint_dir=tmp_path, resume=True,
                        verbose=False)
    assert history["epoch"] == [1]  # nothing left to train: resumed at the end of epoch 1
    np.testing.assert_array_equal(np.asarray(again.params["model"]["layers"]["mlp"]["up_proj"]["weight"]),
                                  np.asarray(lm.params["model"]["layers"]["mlp"]["up_proj"]["weight"]))
