"""Fine-tuning a text classifier on string labels: what `zoohub finetune` and `zoohub demo` run, with
their shared defaults. Importing this module is cheap (zoohub's model code loads on first use), so the
command line can show the defaults in its --help.

    >>> from zoohub.backend import using
    >>> from zoohub.finetune import finetune
    >>> with using("jax"):                          # training needs the jax backend
    ...     clf, history = finetune("starter_bert_tiny_en", (["great film", "awful film"], ["positive", "negative"]),
    ...                             epochs=2, batch_size=2, learning_rate=1e-3)
    >>> clf.labels, history["epoch"]                # the starter's head knows these labels, so it is kept
    (['negative', 'positive'], [1, 2])
"""
from __future__ import annotations

import sys

# The training settings of `zoohub finetune` and `zoohub demo`, shown in their --help. Tuned on the bundled
# starter, which they take from chance to about 99% on the bundled test sentences; pretrained presets of
# base size usually want a smaller learning rate (2e-5 to 5e-5).
EPOCHS = 3
BATCH_SIZE = 16
LEARNING_RATE = 1e-3
# Verbs that train a model, which needs the jax backend.


def finetune(preset: str, train: tuple[list[str], list[str]], validation=None, *,
             epochs: int = EPOCHS, batch_size: int = BATCH_SIZE,
             learning_rate: float = LEARNING_RATE, lora_rank: int | None = None, seed: int = 0,
             callbacks=(), verbose: bool | None = None):
    """Fine-tune a TextClassifier on string labels; returns (classifier, history).

    The preset's own head is kept when it already knows every training label; otherwise a new head is
    made for the training labels (sorted), with a warning on stderr when that drops a head with labels.
    """
    import zoohub

    from zoohub.presets.folder import read_config
    from zoohub.presets.resolve import resolve_preset
    from zoohub.tasks.training.files import label_ids

    texts, labels = train
    # Keep the preset's own head when it already knows these labels (decided from config.json alone).
    saved = zoohub.TextClassifier.saved_labels(read_config(resolve_preset(preset))) or {}
    if saved and set(labels) <= set(saved.values()):
        clf = zoohub.TextClassifier.from_preset(preset, seed=seed)
    else:
        names = sorted(set(labels))
        if saved:
            new = sorted(set(labels) - set(saved.values()))
            print(f"zoohub: warning: the training labels {new} are not among the preset's labels "
                  f"{[saved[k] for k in sorted(saved, key=int)]}; its classification head is replaced by a new, "
                  f"untrained one for {names}", file=sys.stderr)
        clf = zoohub.TextClassifier.from_preset(preset, num_classes=len(names), labels=names, seed=seed)
    y = label_ids(labels, clf.labels, "training data")
    val = None
    if validation is not None:
        val = (validation[0], label_ids(validation[1], clf.labels, "validation data"))
    if lora_rank:
        clf.enable_lora(rank=lora_rank)
    history = clf.fit(texts, y, validation_data=val, epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, seed=seed, callbacks=callbacks, verbose=verbose)
    return clf, history


def epoch_printer(epochs: int):
    """A fit callback printing one line per epoch to stderr (loss, accuracy, validation), for when there
    is no progress bar (stderr is not a terminal, or ZOOHUB_QUIET is on)."""
    def callback(event: str, logs: dict) -> None:
        if event == "epoch":
            shown = [f"{k} {v:.1%}" if k.endswith("accuracy") else f"{k} {v:.4f}"
                     for k, v in logs.items() if k.endswith(("loss", "accuracy"))]
            print(f"epoch {logs['epoch']}/{epochs}: " + ", ".join(shown), file=sys.stderr, flush=True)
    return callback
