"""fit/evaluate on a tiny BERT classifier: it learns, saves as a transformers head, rejects bad data."""
from __future__ import annotations

import numpy as np
import pytest

import zoohub
from zoohub.errors import BackendError, InputError
from zoohub.presets.weights import flatten

from .conftest import sentiment_data

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def trained(bert_classifier_dir, sentiment):
    train_x, train_y, val_x, val_y = sentiment
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    history = clf.fit(train_x, train_y, validation_data=(val_x, val_y), epochs=5, batch_size=16,
                      learning_rate=1e-3, seed=0)
    return clf, history


def test_learns_synthetic_task(trained, sentiment):
    clf, history = trained
    _, _, val_x, val_y = sentiment
    assert history["epoch"] == [1, 2, 3, 4, 5]
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] >= 0.95
    assert len(history["step_loss"]) == 5 * 16
    result = clf.evaluate(val_x, val_y)
    assert result["accuracy"] >= 0.95
    assert result["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-4)
    # predict uses the trained weights.
    assert (clf.predict(val_x).argmax(-1) == np.asarray(val_y)).mean() >= 0.95
    assert clf.classify(["the good"]) == ["positive"]


def test_round_trip_through_transformers(trained, sentiment, tmp_path):
    clf, _ = trained
    texts = sentiment[2][:6]
    clf.save_to_preset(tmp_path / "tuned")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "tuned").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "tuned")
    with torch.no_grad():
        ref = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(clf.logits(texts), ref, atol=1e-4)
    assert model.config.id2label == {0: "negative", 1: "positive"}


def test_labels_by_name_and_dict_of_tokens(bert_classifier_dir):
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    texts, labels = sentiment_data(32, seed=9)
    names = [clf.labels[i] for i in labels]
    a = clf.fit(texts, names, epochs=1, batch_size=8, seed=3)
    clf2 = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    b = clf2.fit(clf2.preprocess(texts), np.asarray(labels), epochs=1, batch_size=8, seed=3)
    # Same data as strings + names or as token arrays + ids: the same run (buckets pad both to 16).
    np.testing.assert_allclose(a["step_loss"], b["step_loss"], rtol=1e-5)


def test_streams_and_one_shot_generators(bert_classifier_dir):
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    texts, labels = sentiment_data(20, seed=4)
    history = clf.fit(((t, y) for t, y in zip(texts, labels)), epochs=1, batch_size=8)
    assert len(history["step_loss"]) == 3  # 8 + 8 + 4 (padded with weight-0 rows)
    with pytest.raises(InputError, match="one-shot"):
        clf.fit(((t, y) for t, y in zip(texts, labels)), epochs=2, batch_size=8)
    history = clf.fit(lambda: zip(texts, labels), epochs=2, batch_size=8)
    assert history["epoch"] == [1, 2]


def test_options_bf16_accumulation_schedule_callbacks(bert_classifier_dir):
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    texts, labels = sentiment_data(48, seed=6)
    events = []

    def callback(event, logs):
        events.append((event, logs.get("step")))
        return event == "step" and logs["step"] == 5  # stop early

    history = clf.fit(texts, labels, epochs=3, batch_size=8, compute_dtype="bfloat16", grad_accumulation=2,
                      schedule="linear", warmup=0.2, callbacks=[callback])
    assert len(history["step_loss"]) == 5 and history["epoch"] == [1]
    assert all(np.isfinite(history["step_loss"]))
    assert events[:5] == [("step", i) for i in range(1, 6)]
    assert flatten(clf.params)["classifier.weight"].dtype == np.float32  # masters stay float32


def test_early_stopping_restores_best(bert_classifier_dir, sentiment):
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    texts, labels = sentiment_data(32, seed=8)
    val_x, val_y = sentiment[2][:16], sentiment[3][:16]
    # A huge learning rate makes validation loss worse after the first epoch.
    history = clf.fit(texts, labels, validation_data=(val_x, val_y), epochs=6, batch_size=16,
                      learning_rate=0.3, early_stopping={"patience": 1, "monitor": "val_loss"})
    best = int(np.argmin(history["val_loss"]))
    assert len(history["epoch"]) == best + 2  # stopped one epoch after the best
    assert clf.evaluate(val_x, val_y)["loss"] == pytest.approx(history["val_loss"][best], rel=1e-4)


@pytest.mark.parametrize("x, y, message", [
    (["a good", "the bad"], [1], "same length"),
    (["a good", "the bad"], [1, 2], "out of range"),
    (["a good", "the bad"], [1, "neutral"], "not one of the task's labels"),
    ([], [], "empty"),
    (["a good", 3], [1, 0], r"x\[1\] is int"),
    (["a good", "the bad"], None, "needs labels"),
])
def test_bad_data_fails_before_training(bert_classifier_dir, x, y, message):
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    before = {k: np.array(v) for k, v in flatten(clf.params).items()}
    steps = []
    with pytest.raises(InputError, match=message):
        clf.fit(x, y, validation_data=(["a good"], [1]), callbacks=[lambda e, logs: steps.append(e)])
    assert steps == []
    assert all(np.array_equal(before[k], np.asarray(v)) for k, v in flatten(clf.params).items())


def test_bad_validation_data_fails_before_training(bert_classifier_dir):
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    steps = []
    with pytest.raises(InputError, match="validation_data"):
        clf.fit(["a good"], [1], validation_data=(["a"], [7]), callbacks=[lambda e, logs: steps.append(e)])
    assert steps == []


def test_numpy_backend_cannot_fit(bert_classifier_dir):
    with zoohub.backend.using("numpy"):
        clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    assert clf.backend == "numpy"
    with pytest.raises(BackendError, match="jax"):
        clf.fit(["a good"], [1])
    # evaluate is inference: it works on numpy.
    assert set(clf.evaluate(["a good"], [1])) == {"loss", "accuracy"}


def test_weight_decay_skips_biases_and_norms_of_stacked_layers():
    from zoohub.tasks.training.optim import decays

    layers = "model.layers"
    assert decays("model.layers.mlp.up_proj.weight", (2, 80, 48), layers)
    assert not decays("model.layers.mlp.up_proj.bias", (2, 80), layers)         # a bias per layer
    assert not decays("transformer.h.ln_1.weight", (2, 48), "transformer.h")    # GPT-2's LayerNorm per layer
    assert decays("model.embed_tokens.weight", (97, 48), layers)
    assert not decays("bert.encoder.layer.0.output.dense.bias", (48,))


def test_a_killed_runs_pointer_temp_file_is_removed_by_the_next_checkpoint(bert_classifier_dir, tmp_path):
    texts, labels = sentiment_data(8, seed=2)
    stale = tmp_path / ".latest.json.tmp-deadbeef"
    tmp_path.mkdir(exist_ok=True)
    stale.write_text("{")  # what a kill between writing the pointer and renaming it leaves
    clf = zoohub.TextClassifier.from_preset(bert_classifier_dir)
    clf.fit(texts, labels, epochs=1, batch_size=4, checkpoint_dir=tmp_path, verbose=False)
    assert not stale.exists() and (tmp_path / "latest.json").is_file()
