"""`zoohub demo`: the three user stories in one offline run, narrated.

1. load a preset by name from the embedded local hub; 2. evaluate, fine-tune, evaluate again;
3. save, upload to the local hub under a new name, load it back by that name and classify.

The bundled starter is a toy: a randomly initialised 2-layer BERT that learns, from the bundled template
sentences, which of their words are positive or negative. The sentences it classifies at the end are the
README's examples, which are not in the training data.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "sentiment"
STARTER = "starter_bert_tiny_en"
# Sentence -> expected label; README.md shows these (the CLI example and the demo's last step).
EXAMPLES = {"great film": "positive", "awful film": "negative", "i loved it": "positive",
            "i hated it": "negative", "what a waste of time": "negative", "the soundtrack is a gem.": "positive"}


def _step(n: int, text: str) -> None:
    print(f"\n[{n}] {text}", flush=True)


def run_demo(preset: str = STARTER, *, epochs: int, batch_size: int, learning_rate: float,
             upload_to: str = "local://me/starter-sentiment") -> dict:
    """Run the demo with `zoohub finetune`'s settings; returns the accuracies before and after fine-tuning."""
    import zoohub
    from zoohub.tasks.training.files import label_ids, read_labelled

    start = time.perf_counter()
    train_texts, train_labels = read_labelled(str(DATA / "train.csv"), "text", "label")
    test_texts, test_labels = read_labelled(str(DATA / "test.csv"), "text", "label")
    if preset == STARTER:
        print(f"The starter preset is a tiny toy model: a randomly initialised 2-layer BERT, fine-tuned here on "
              f"{len(train_texts)} template sentences.\nIt learns which of their words are positive or negative "
              "and knows no other English; for real work, fine-tune a pretrained preset (zoohub list).")

    _step(1, f"Load preset {preset!r} by name (backend: {zoohub.get_backend()})")
    clf = zoohub.TextClassifier.from_preset(preset, num_classes=2, labels=["negative", "positive"])
    print(f"    {clf}; labels {clf.labels}")

    _step(2, f"Evaluate on the bundled test set ({len(test_texts)} sentences)")
    y_train = label_ids(train_labels, clf.labels, "train.csv")
    y_test = label_ids(test_labels, clf.labels, "test.csv")
    before = clf.evaluate(test_texts, y_test)
    print(f"    accuracy {before['accuracy']:.1%}, loss {before['loss']:.3f}")

    _step(3, f"Fine-tune on {len(train_texts)} sentences for {epochs} epochs (AdamW, learning rate {learning_rate:g})")
    clf.fit(train_texts, y_train, validation_data=(test_texts, y_test), epochs=epochs, batch_size=batch_size,
            learning_rate=learning_rate, seed=0)
    after = clf.evaluate(test_texts, y_test)
    print(f"    accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}, loss {before['loss']:.3f} -> {after['loss']:.3f}")

    _step(4, f"Save as a transformers checkpoint and upload to {upload_to}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = clf.save_to_preset(Path(tmp) / "starter-sentiment")
        url = zoohub.upload_preset(upload_to, folder, metrics={"accuracy": round(after["accuracy"], 4)})
    print(f"    {url}")

    _step(5, f"Load it back by name ({upload_to}) and classify sentences it was not trained on")
    reloaded = zoohub.TextClassifier.from_preset(upload_to)
    texts = list(EXAMPLES)
    for text, label, probs in zip(texts, reloaded.classify(texts), reloaded.predict(texts)):
        print(f"    {label:>9} {probs.max():.2f}  {text}")
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return {"accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"], "url": url}
