"""Model cards (README.md) for uploaded presets: YAML front matter the Hub indexes, and usage snippets.

The card is a pure function of the folder and the arguments (no dates), so re-uploading an
unchanged preset produces the same bytes and no new commit.

    >>> print(model_card({"model_type": "bert", "architectures": ["BertForSequenceClassification"]},
    ...                  {}, "hf://me/tiny").splitlines()[1])
    library_name: zoohub
"""
from __future__ import annotations

import json
from collections.abc import Mapping

# zoohub task -> (Hub pipeline tag, zoohub class, transformers auto class)
TASKS = {
    "backbone": ("feature-extraction", "Backbone", "AutoModel"),
    "text_classifier": ("text-classification", "TextClassifier", "AutoModelForSequenceClassification"),
    "masked_lm": ("fill-mask", "MaskedLM", "AutoModelForMaskedLM"),
    "text_embedder": ("sentence-similarity", "TextEmbedder", "AutoModel"),
    "causal_lm": ("text-generation", "CausalLM", "AutoModelForCausalLM"),
    "image_classifier": ("image-classification", "ImageClassifier", "AutoModelForImageClassification"),
}
# transformers architecture suffix -> zoohub task
ARCHITECTURE_TASKS = (
    ("ForSequenceClassification", "text_classifier"), ("ForMaskedLM", "masked_lm"),
    ("ForCausalLM", "causal_lm"), ("LMHeadModel", "causal_lm"),
    ("ForImageClassification", "image_classifier"),
)


def infer_task(config: Mapping, metadata: Mapping) -> str:
    """The task from zoohub.json, else from transformers' `architectures`, else "backbone"."""
    if metadata.get("task") in TASKS:
        return metadata["task"]
    for arch in config.get("architectures") or []:
        for suffix, task in ARCHITECTURE_TASKS:
            if arch.endswith(suffix):
                return task
    return "backbone"


def base_model(metadata: Mapping) -> str | None:
    """The Hub repo this preset was fine-tuned from, when zoohub.json knows it."""
    for key in ("base_model", "source", "handle"):
        repo = hub_repo(metadata.get(key), bare=key == "base_model")
        if repo:
            return repo
    return None


def hub_repo(value, *, bare: bool = True) -> str | None:
    """'owner/repo' for "hf://owner/repo[@revision]" (and for a bare "owner/repo" when `bare`), else None."""
    if isinstance(value, str) and value.startswith("hf://"):
        return value[len("hf://"):].partition("@")[0]
    if bare and isinstance(value, str) and value.count("/") == 1 and "://" not in value:
        return value
    return None


def _yaml(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid YAML scalar


def model_card(config: Mapping, metadata: Mapping, handle: str, *, license: str | None = None,
               base: str | None = None, metrics: Mapping[str, float] | None = None) -> str:
    """The README.md text for a preset at `handle` (hf://owner/repo, local://..., file://...).

    `base` names what the preset was fine-tuned from when the caller knows more than zoohub.json (a
    registry name and its handle, say); a Hub repo goes into the front matter as `base_model`, anything
    else only into the text. `license` defaults to zoohub.json's.
    """
    task = infer_task(config, metadata)
    pipeline, zoohub_class, auto_class = TASKS[task]
    model_type = config.get("model_type", "unknown")
    base_repo = hub_repo(base) if base else base_model(metadata)
    license = license or metadata.get("license")
    repo = handle[len("hf://"):].partition("@")[0] if handle.startswith("hf://") else None
    tags = list(dict.fromkeys(["zoohub", model_type, task.replace("_", "-")]))

    front = ["---", "library_name: zoohub", f"pipeline_tag: {_yaml(pipeline)}"]
    if base_repo:
        front.append(f"base_model: {_yaml(base_repo)}")
    if license:
        front.append(f"license: {_yaml(license)}")
    front.append("tags:")
    front += [f"- {_yaml(t)}" for t in tags]
    if metrics:
        front.append("metrics:")
        front += [f"- {_yaml(m)}" for m in metrics]
    front.append("---")

    title = repo or metadata.get("preset") or handle
    body = [
        "", f"# {title}", "",
        f"A {model_type} {task.replace('_', ' ')} saved with [zoohub](https://pypi.org/project/zoohub/) in the "
        "Hugging Face transformers format (config.json, safetensors weights, tokenizer files).",
    ]
    if base_repo:
        body += ["", f"Fine-tuned from [{base_repo}](https://huggingface.co/{base_repo})."]
    elif base:
        body += ["", f"Fine-tuned from {base}."]
    if license:
        body += ["", f"License: {license}."]
    body += ["", "## Usage", "", "With zoohub:", "", "```python", "import zoohub", "",
             f"model = zoohub.{zoohub_class}.from_preset({handle!r})", "```", "",
             "With transformers:", "", "```python",
             f"from transformers import {auto_class}" + (", AutoTokenizer" if task != "image_classifier" else ""),
             ""]
    source = repo or "path/to/downloaded/folder"
    body.append(f"model = {auto_class}.from_pretrained({source!r})")
    if task != "image_classifier":
        body.append(f"tokenizer = AutoTokenizer.from_pretrained({source!r})")
    body.append("```")
    if metrics:
        body += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        body += [f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
                 for name, value in metrics.items()]
    return "\n".join(front + body) + "\n"
