"""Fine-tuning: `fit` and `evaluate` for the trainable tasks (TextClassifier, ImageClassifier, CausalLM).

Tasks call these through `Task.fit` / `Task.evaluate`:

    >>> import zoohub
    >>> clf = zoohub.TextClassifier.from_preset("path/to/bert", num_classes=2)        # doctest: +SKIP
    >>> history = clf.fit(["good", "bad"], [1, 0], epochs=2, batch_size=2)             # doctest: +SKIP
    >>> clf.evaluate(["good", "bad"], [1, 0])                                          # doctest: +SKIP
    {'loss': 0.41, 'accuracy': 1.0}

Parts: `data` (user data -> fixed-shape batches, one adapter per task kind), `optim` (what trains,
losses, the optax chain), `checkpoint` (per-epoch presets + optimizer state, resume), `loop`,
`files` (labelled CSV/JSONL files, as the CLI reads them).
"""
from zoohub.tasks.training.loop import evaluate, fit

__all__ = ["fit", "evaluate"]
