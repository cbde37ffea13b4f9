"""Strict checkpoint loading: a checkpoint's tensors -> the flat param dict of a task model.

Key sets must match exactly (after the family prefix is stripped), every shape is checked, and
nothing is left uninitialised silently: a new head is initialised on purpose and reported.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from zoohub.backbones.base import Family, Head, init_tensor
from zoohub.errors import WeightMismatchError

log = logging.getLogger("zoohub")


@dataclass
class LoadReport:
    """What loading did beyond a plain lookup, kept on the task as `task.load_report`.

    >>> LoadReport().new_tensors
    []
    """

    new_tensors: list[str] = field(default_factory=list)
    """Initialised here (a new head, or BERT's pooler for a classifier)."""
    unused_tensors: list[str] = field(default_factory=list)
    """In the checkpoint but belonging to another task's head (e.g. `cls.seq_relationship`)."""


def _first(items, n: int = 5) -> str:
    items = sorted(items)
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def split_backbone(tensors: dict, family: Family, expected: set[str]) -> tuple[dict, dict]:
    """Backbone tensors (unprefixed) and the rest, for checkpoints saved with or without the prefix."""
    prefix = family.prefix + "."
    if family.prefix and any(k.startswith(prefix) for k in tensors):
        backbone = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        rest = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
        return backbone, rest
    roots = {k.split(".")[0] for k in expected}
    backbone = {k: v for k, v in tensors.items() if k.split(".")[0] in roots}
    rest = {k: v for k, v in tensors.items() if k.split(".")[0] not in roots}
    return backbone, rest


def _check_shapes(found: dict, shapes: dict, where: str) -> None:
    bad = [f"{k}: checkpoint {tuple(found[k].shape)}, config implies {tuple(s)}"
           for k, s in shapes.items() if k in found and tuple(found[k].shape) != tuple(s)]
    if bad:
        raise WeightMismatchError(f"{where}: tensor shapes do not match config.json: " + "; ".join(bad[:5]))


def load_params(
    tensors: dict[str, np.ndarray], family: Family, config, head: Head | None = None,
    *, num_labels: int | None = None, seed: int = 0, where: str = "checkpoint",
) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Flat params of the task model: backbone tensors (under `family.prefix` when a head is given)
    plus the head's. A head absent from the checkpoint is initialised (the classifier case)."""
    report = LoadReport()
    rng = np.random.default_rng(seed)
    std = getattr(config, "initializer_range", 0.02)
    by_config = family.ignored_by_config(config)
    tensors = {k: v for k, v in tensors.items()
               if not family.is_ignored(k, head) and not any(re.search(p, k) for p in by_config)}
    expected = family.shapes(config)
    optional = family.optional_shapes(config)
    backbone, rest = split_backbone(tensors, family, set(expected) | set(optional))

    missing = set(expected) - set(backbone)
    unexpected = set(backbone) - set(expected) - set(optional)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {_first(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_first(unexpected)}")
        raise WeightMismatchError(
            f"{where}: tensors do not match a {family.model_type} model with this config.json ("
            + "; ".join(parts) + "); is config.json from the same checkpoint?"
        )
    _check_shapes(backbone, {**expected, **optional}, where)

    params = dict(backbone)
    if head is None:
        return params, report
    for name in head.backbone_extras:
        if name not in params:
            params[name] = init_tensor(name, optional[name], std=std, rng=rng)
            report.new_tensors.append(f"{family.root(head)}{name}")
    params = {f"{family.root(head)}{k}": v for k, v in params.items()}

    head_shapes = dict(head.shapes(config, num_labels or 0))
    if config.tie_word_embeddings:
        for name in head.tied:
            if head.tied_unless_stored and name in rest:
                continue
            head_shapes.pop(name, None)
            rest.pop(name, None)
    for name in head.zeros_if_missing:
        if name not in rest and name in head_shapes:
            rest[name] = np.zeros(head_shapes[name], np.float32)
            report.new_tensors.append(name)
    present = {k for k in head_shapes if k in rest}
    shape_ok = all(tuple(rest[k].shape) == tuple(head_shapes[k]) for k in present)
    if present == set(head_shapes) and shape_ok:
        params.update({k: rest.pop(k) for k in head_shapes})
    elif present and shape_ok:
        raise WeightMismatchError(f"{where}: the {head.architecture} head is incomplete; missing {_first(set(head_shapes) - present)}")
    elif head.task in ("text_classifier", "image_classifier", "token_classifier", "question_answerer") and num_labels:
        for name, shape in head_shapes.items():
            rest.pop(name, None)
            params[name] = init_tensor(name, shape, std=std, rng=rng)
            report.new_tensors.append(name)
    else:
        _check_shapes(rest, head_shapes, where)
        raise WeightMismatchError(f"{where}: has no {head.architecture} head (missing {_first(set(head_shapes) - present)})")
    report.unused_tensors = sorted(rest)
    if report.unused_tensors:
        log.info("%s: ignoring tensors of another task's head: %s", where, _first(report.unused_tensors))
    return params, report
