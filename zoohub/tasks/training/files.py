r"""Labelled text files for fine-tuning: CSV with a header row, or JSON Lines, as `zoohub finetune` and
`zoohub demo` read them. Errors name the file, the row or line, and the column.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
    >>> _ = path.write_text("text,label\ngreat film,positive\ndull film,negative\n")
    >>> texts, labels = read_labelled(str(path), "text", "label")
    >>> texts, label_ids(labels, ["negative", "positive"], "train.csv")
    (['great film', 'dull film'], [1, 0])
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from zoohub.errors import InputError


def read_labelled(path: str, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Texts and labels from a CSV (header row) or JSONL file, with errors that name the column/line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    if p.suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise InputError(f"{path}:{n}: not valid JSON") from None
    else:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        raise InputError(f"{path}: no rows")
    for column in (text_column, label_column):
        if column not in rows[0]:
            raise InputError(f"{path}: no column {column!r}; columns are {sorted(rows[0])}")
    texts, labels = [], []
    for n, row in enumerate(rows, 1):
        text, label = row.get(text_column), row.get(label_column)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{path}: row {n} has an empty or non-text {text_column!r}")
        if label is None or str(label).strip() == "":
            raise InputError(f"{path}: row {n} has no {label_column!r}")
        texts.append(text)
        labels.append(str(label).strip())
    return texts, labels


def label_ids(labels: list[str], names: list[str], where: str) -> list[int]:
    """Class ids of string labels in the model's label order; unknown labels are an error naming `where`."""
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise InputError(f"{where}: labels {unknown} are not among the model's labels {names}")
    return [names.index(label) for label in labels]
