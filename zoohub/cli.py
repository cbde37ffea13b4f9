"""The `zoohub` command: list, inspect, download, run, fine-tune and upload presets.

    zoohub demo                      # offline: load, evaluate, fine-tune, upload, reload
    zoohub list --task causal_lm
    zoohub classify PRESET "great film" "awful film" --json

Exit codes: 0 success, 1 the operation failed (missing files, hub errors...), 2 bad usage or input.
Errors are one line on stderr; `--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from zoohub.errors import InputError, PresetNotFoundError, ZoohubError


class UsageError(InputError):
    """Bad command-line input (exit code 2)."""


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def _set_backend(name: str | None) -> None:
    if name:
        import zoohub

        zoohub.set_backend(name)


# ---- verbs -------------------------------------------------------------------------------

def cmd_list(args) -> None:
    from zoohub.presets.registry import all_presets

    rows = [p for p in all_presets() if (not args.task or p.task == args.task) and (not args.family or p.family == args.family)]
    if args.json:
        _print_json([dict(p.__dict__) for p in rows])
        return
    for p in rows:
        print(f"{p.name:34} {p.task:16} {p.params / 1e6:9.1f}M  {p.handle}")


def _cached_folder(handle: str) -> Path | None:
    """The preset's folder when loading it needs no network, else None (resolved in offline mode)."""
    import os

    from zoohub.presets.resolve import resolve_preset

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return resolve_preset(handle)
    except ZoohubError:
        return None
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def cmd_info(args) -> None:
    from zoohub.presets.registry import get_preset, list_presets

    info: dict = {"preset": args.preset}
    if args.preset in list_presets():
        info.update({k: v for k, v in get_preset(args.preset).__dict__.items() if v is not None})
    folder = _cached_folder(args.preset)
    info["cached"] = folder is not None
    if folder is not None:
        from zoohub.presets.folder import read_config

        config = read_config(folder)
        info.update(folder=str(folder), family=config["model_type"], architectures=config.get("architectures"),
                    files={p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()})
    if args.json:
        _print_json(info)
        return
    for key, value in info.items():
        if key == "files":
            print("files:")
            for name, size in value.items():
                print(f"  {name:40} {size:>12,} bytes")
        else:
            print(f"{key}: {value}")


def cmd_download(args) -> None:
    from zoohub.presets.resolve import resolve_preset

    print(resolve_preset(args.preset, revision=args.revision))


def cmd_classify(args) -> None:
    import zoohub

    clf = zoohub.TextClassifier.from_preset(args.preset)
    probs = clf.predict(args.texts)
    results = [{"text": t, "label": clf.labels[int(p.argmax())], "scores": dict(zip(clf.labels, map(float, p)))}
               for t, p in zip(args.texts, probs)]
    if args.json:
        _print_json(results)
        return
    for r in results:
        print(f"{r['label']:>12} {r['scores'][r['label']]:.3f}  {r['text']}")


def cmd_embed(args) -> None:
    import numpy as np

    import zoohub

    path = Path(args.input)
    if not path.is_file():
        raise UsageError(f"{args.input}: no such file")
    texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise UsageError(f"{args.input}: no non-empty lines")
    vectors = zoohub.TextEmbedder.from_preset(args.preset).predict(texts)
    if args.output:
        np.save(args.output, vectors)
    if args.json:
        _print_json({"count": len(texts), "dim": int(vectors.shape[1]), "output": args.output,
                     "embeddings": None if args.output else vectors.tolist()})
    else:
        print(f"{len(texts)} embeddings of dimension {vectors.shape[1]}" + (f" -> {args.output}" if args.output else ""))


def _sampling_kwargs(args) -> dict:
    out = {"max_new_tokens": args.max_new_tokens, "seed": args.seed}
    if args.sampler:
        out["sampler"] = args.sampler
    for name in ("temperature", "top_k", "top_p"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    return out


def cmd_generate(args) -> None:
    import zoohub

    lm = zoohub.CausalLM.from_preset(args.preset)
    for piece in lm.generate(args.prompt, stream=True, **_sampling_kwargs(args)):
        print(piece, end="", flush=True)
    print()


def cmd_chat(args) -> None:
    import zoohub

    lm = zoohub.CausalLM.from_preset(args.preset)
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    print("chatting with", args.preset, "(empty line or Ctrl-D to quit)")
    for line in sys.stdin:
        if not line.strip():
            break
        messages.append({"role": "user", "content": line.strip()})
        reply = ""
        for piece in lm.chat(messages, stream=True, **_sampling_kwargs(args)):
            reply += piece
            print(piece, end="", flush=True)
        print()
        messages.append({"role": "assistant", "content": reply})


def finetune(preset: str, train: tuple[list[str], list[str]], validation=None, *, epochs: int, batch_size: int,
             learning_rate: float, lora_rank: int | None = None, seed: int = 0):
    """Fine-tune a TextClassifier on string labels; returns (classifier, history)."""
    import zoohub

    from zoohub.presets.folder import read_config
    from zoohub.presets.resolve import resolve_preset
    from zoohub.tasks.training.files import label_ids

    texts, labels = train
    # Keep the preset's own head when it already knows these labels (decided from config.json alone).
    saved = zoohub.TextClassifier.saved_labels(read_config(resolve_preset(preset))) or {}
    if set(labels) <= set(saved.values()):
        clf = zoohub.TextClassifier.from_preset(preset, seed=seed)
    else:
        names = sorted(set(labels))
        clf = zoohub.TextClassifier.from_preset(preset, num_classes=len(names), labels=names, seed=seed)
    y = label_ids(labels, clf.labels, "training data")
    val = None
    if validation is not None:
        val = (validation[0], label_ids(validation[1], clf.labels, "validation data"))
    if lora_rank:
        clf.enable_lora(rank=lora_rank)
    history = clf.fit(texts, y, validation_data=val, epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, seed=seed)
    return clf, history


def cmd_finetune(args) -> None:
    from zoohub.tasks.training.files import read_labelled

    train = read_labelled(args.train, args.text_column, args.label_column)
    val = read_labelled(args.validation, args.text_column, args.label_column) if args.validation else None
    clf, history = finetune(args.preset, train, val, epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, lora_rank=args.lora_rank, seed=args.seed)
    out = clf.save_to_preset(args.output)
    print(f"saved fine-tuned preset to {out}")


def cmd_upload(args) -> None:
    import zoohub

    print(zoohub.upload_preset(args.handle, args.folder, private=args.private, commit_message=args.message))


def cmd_cache(args) -> None:
    from zoohub.hub.env import hf_cache_dir, zoohub_home

    places = {"huggingface_hub cache": hf_cache_dir(), "zoohub static-host cache": zoohub_home() / "static"}
    if args.action == "list":
        for label, root in places.items():
            print(f"{label}: {root}")
            if root.is_dir():
                for entry in sorted(root.iterdir()):
                    if entry.name.startswith("."):
                        continue
                    size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
                    print(f"  {entry.name:60} {size / 1e6:10.1f} MB")
    else:
        for label, root in places.items():
            if root.is_dir():
                for entry in root.iterdir():
                    if entry.name.startswith("models--") or label.startswith("zoohub"):
                        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
        print("cache cleared (the local hub under ZOOHUB_HOME/hub is kept)")


def cmd_demo(args) -> None:
    from zoohub.demo import run_demo

    run_demo(args.preset, epochs=args.epochs)


# ---- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoohub", description="Load, run, fine-tune and upload model presets.")
    parser.add_argument("--backend", choices=["jax", "numpy"], help="array backend (default: jax if installed)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    p = add("demo", cmd_demo, "offline tour: load, evaluate, fine-tune, upload and reload the starter preset")
    p.add_argument("--preset", default="starter_bert_tiny_en")
    p.add_argument("--epochs", type=int, default=6)
    p = add("list", cmd_list, "list registered presets")
    p.add_argument("--task")
    p.add_argument("--family")
    p.add_argument("--json", action="store_true")
    p = add("info", cmd_info, "show a preset's family, size, files, revision and cache state")
    p.add_argument("preset")
    p.add_argument("--json", action="store_true")
    p = add("download", cmd_download, "fetch a preset into the cache and print its folder")
    p.add_argument("preset")
    p.add_argument("--revision")
    for name, fn, text in (("generate", cmd_generate, "generate text from a prompt"),
                           ("chat", cmd_chat, "chat on stdin with the checkpoint's chat template")):
        p = add(name, fn, text)
        p.add_argument("preset")
        if name == "generate":
            p.add_argument("prompt")
        else:
            p.add_argument("--system")
        p.add_argument("--max-new-tokens", type=int, default=64)
        p.add_argument("--sampler", choices=["greedy", "temperature", "top_k", "top_p", "beam"])
        p.add_argument("--temperature", type=float)
        p.add_argument("--top-k", type=int)
        p.add_argument("--top-p", type=float)
        p.add_argument("--seed", type=int, default=0)
    p = add("classify", cmd_classify, "classify texts with a TextClassifier preset")
    p.add_argument("preset")
    p.add_argument("texts", nargs="+")
    p.add_argument("--json", action="store_true")
    p = add("embed", cmd_embed, "embed the lines of a text file")
    p.add_argument("preset")
    p.add_argument("--input", required=True)
    p.add_argument("--output")
    p.add_argument("--json", action="store_true")
    p = add("finetune", cmd_finetune, "fine-tune a text classifier on a CSV or JSONL file")
    p.add_argument("preset")
    p.add_argument("--train", required=True)
    p.add_argument("--validation")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--lora-rank", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    p = add("upload", cmd_upload, "validate a preset folder and upload it (hf://, local://, file://)")
    p.add_argument("folder")
    p.add_argument("handle")
    p.add_argument("--private", action="store_true")
    p.add_argument("--message")
    p = add("cache", cmd_cache, "list or clear downloaded files")
    p.add_argument("action", choices=["list", "clear"])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _set_backend(args.backend)
        args.fn(args)
        return 0
    except (InputError, ValueError, PresetNotFoundError) as e:
        if args.debug:
            raise
        print(f"zoohub: error: {e}", file=sys.stderr)
        return 2
    except (ZoohubError, OSError) as e:
        if args.debug:
            raise
        print(f"zoohub: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
