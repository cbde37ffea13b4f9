"""The registry of named presets: data rows, no code per model.

    >>> from zoohub.presets.registry import list_presets, get_preset
    >>> "bert_base_en_uncased" in list_presets()
    True
    >>> get_preset("bert_base_en_uncased").handle
    'hf://google-bert/bert-base-uncased'
"""
from __future__ import annotations

from dataclasses import dataclass

from zoohub.errors import PresetNotFoundError, not_found


# The tasks a preset can default to (the task classes' names in snake case).
TASKS = ("backbone", "text_classifier", "masked_lm", "text_embedder", "causal_lm", "image_classifier",
         "token_classifier", "question_answerer", "reranker", "seq2seq_lm")


@dataclass(frozen=True, kw_only=True)
class Preset:
    """One row of the registry: a name for a pinned hub handle, with what a user needs to choose it.

    >>> from zoohub.presets.registry import get_preset
    >>> get_preset("gpt2_base_en").family
    'gpt2'
    """

    name: str
    handle: str          # hf://owner/repo, https://host/folder/ or local://owner/name
    revision: str | None  # pinned commit hash, so a name always means the same bytes
    description: str
    params: int          # parameter count of the backbone + default head
    license: str
    task: str            # default task, one of TASKS
    family: str          # transformers model_type
    bundled: str | None = None  # folder under zoohub/data shipped in the package, seeded into the local hub


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> None:
    """Add a row; a duplicate name or an unknown task is an error, never a silent overwrite."""
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    if preset.task not in TASKS:
        raise ValueError(f"preset {preset.name!r} has task {preset.task!r}; tasks are {', '.join(TASKS)}")
    _PRESETS[preset.name] = preset


def get_preset(name: str) -> Preset:
    """The row for `name`, or an error with close matches."""
    try:
        return _PRESETS[name]
    except KeyError:
        raise PresetNotFoundError(
            not_found(f"preset {name!r} not found", name, _PRESETS, "zoohub.list_presets() lists all")) from None


def list_presets(task: str | None = None, family: str | None = None) -> list[str]:
    """Names of the registered presets, optionally only one task's or family's.

    >>> import zoohub
    >>> "bert_base_en_uncased" in zoohub.list_presets(family="bert")
    True
    """
    return sorted(
        p.name for p in _PRESETS.values()
        if (task is None or p.task == task) and (family is None or p.family == family)
    )


def all_presets() -> list[Preset]:
    return [_PRESETS[n] for n in sorted(_PRESETS)]


def _load_catalogs() -> None:
    import importlib
    import importlib.util

    # One data module per area, so rows are added without touching each other's files.
    for module in ("catalog", "catalog_decoders", "catalog_vision", "catalog_encoders", "catalog_seq2seq"):
        name = f"zoohub.presets.{module}"
        if importlib.util.find_spec(name) is not None:
            for row in importlib.import_module(name).ROWS:
                register_preset(Preset(**row))


_load_catalogs()
