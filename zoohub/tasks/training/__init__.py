"""Fine-tuning: `fit` and `evaluate` for the trainable tasks (TextClassifier, ImageClassifier, CausalLM).

Tasks call these through `Task.fit` / `Task.evaluate`:

    >>> import zoohub
    >>> from zoohub.demo import DATA                    # the bundled sentiment sentences
    >>> from zoohub.tasks.training.files import label_ids, read_labelled
    >>> clf = zoohub.TextClassifier.from_preset("starter_bert_tiny_en")   # the bundled toy BERT
    >>> texts, labels = read_labelled(str(DATA / "test.csv"), "text", "label")
    >>> y = label_ids(labels, clf.labels, "test.csv")
    >>> result = clf.evaluate(texts, y)                 # before fine-tuning: about chance
    >>> len(texts), sorted(result)
    (189, ['accuracy', 'loss'])

`clf.fit(texts, y, epochs=3)` then fine-tunes it in place, on the jax backend: `fit` (in `loop`) has an
example that trains, and `zoohub.finetune` one that takes string labels.

Parts: `data` (user data -> fixed-shape batches, one adapter per task kind), `optim` (what trains,
losses, the optax chain), `checkpoint` (per-epoch presets + optimizer state, resume), `loop`,
`files` (labelled CSV/JSONL files, as the CLI reads them).
"""
from zoohub.tasks.training.loop import evaluate, fit

__all__ = ["fit", "evaluate"]
