"""The `zoohub` command: list, inspect, download, run, fine-tune and upload presets.

    zoohub demo                      # offline: load, evaluate, fine-tune, upload, reload
    zoohub list --task causal_lm
    zoohub classify PRESET "great film" "awful film" --json

Exit codes: 0 success, 1 the operation failed (missing files, hub errors...), 2 bad usage or input.
Errors are one line on stderr; `--debug` also shows the traceback (the exit code stays the same).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import traceback
from pathlib import Path

from zoohub import __version__
from zoohub.errors import BackendError, InputError, PresetNotFoundError, ZoohubError, not_found
from zoohub.finetune import BATCH_SIZE, EPOCHS, LEARNING_RATE, epoch_printer, finetune

TRAINING_VERBS = ("demo", "finetune")
# The library's errors name Python calls; on the command line the verb that does the same is clearer.
CLI_WORDS = {"zoohub.list_presets() lists all": "zoohub list shows them all"}


class UsageError(InputError):
    """Bad command-line input (exit code 2)."""


def exit_code(error: BaseException) -> int | None:
    """2 for bad usage or input, 1 for a failed operation, None for a bug (shown as a traceback)."""
    if isinstance(error, (InputError, ValueError, PresetNotFoundError)):
        return 2
    if isinstance(error, (ZoohubError, OSError)):
        return 1
    return None


def error_line(error: BaseException) -> str:
    message = str(error)
    for api, verb in CLI_WORDS.items():
        message = message.replace(api, verb)
    return "zoohub: error: " + " ".join(message.split())  # one line, whatever the message holds


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def _set_backend(args) -> None:
    """Select --backend; a training verb on numpy (inference only) is refused before any work."""
    from zoohub import backend

    if args.backend:
        backend.set_backend(args.backend)
    if args.command not in TRAINING_VERBS or backend.get_backend() != "numpy":
        return
    install = "" if importlib.util.find_spec("jax") else "pip install jax optax, then "
    if args.backend == "numpy":
        raise UsageError(f"{args.command} trains a model, which needs the jax backend, and --backend numpy is "
                         f"inference only; {install}leave out --backend numpy")
    if os.environ.get("ZOOHUB_BACKEND", "").strip():
        raise UsageError(f"{args.command} trains a model, which needs the jax backend, and ZOOHUB_BACKEND="
                         f"{os.environ['ZOOHUB_BACKEND']} selects numpy (inference only); {install}pass --backend jax")
    raise BackendError(f"{args.command} trains a model, which needs the jax backend; jax is not installed: "
                       "pip install jax optax")


# ---- verbs -------------------------------------------------------------------------------

def _count(n: int) -> str:
    """A parameter count in K/M/B: 107_586 -> '107.6K'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _check_choice(option: str, plural: str, value: str | None, known: list[str]) -> None:
    if value is not None and value not in known:
        raise UsageError(not_found(f"--{option} {value!r} is not one zoohub knows", value, known,
                                   f"{plural}: {', '.join(known)}"))


def cmd_list(args) -> None:
    from zoohub.backbones import supported_model_types
    from zoohub.presets.registry import TASKS, all_presets

    _check_choice("task", "tasks", args.task, sorted(TASKS))
    _check_choice("family", "families", args.family, supported_model_types())
    rows = [p for p in all_presets() if (not args.task or p.task == args.task) and (not args.family or p.family == args.family)]
    if args.json:
        _print_json([dict(p.__dict__) for p in rows])
        return
    if not rows:
        wanted = " and ".join(f"{k} {v!r}" for k, v in (("task", args.task), ("family", args.family)) if v)
        print(f"no registered preset has {wanted}; zoohub list shows them all", file=sys.stderr)
        return
    table = [("NAME", "TASK", "FAMILY", "PARAMS", "HANDLE")]
    table += [(p.name, p.task, p.family, _count(p.params), p.handle) for p in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        name, task, family, params, handle = row
        print(f"{name:<{widths[0]}}  {task:<{widths[1]}}  {family:<{widths[2]}}  {params:>{widths[3]}}  {handle}")
    print(f"\n{len(rows)} presets; PARAMS: parameters in K/M/B (thousands, millions, billions); "
          "details: zoohub info NAME")


def _cached_folder(handle: str) -> Path | None:
    """The preset's folder when loading it needs no network, else None (resolved in offline mode).

    A name that is neither registered, nor a handle, nor a folder is a PresetNotFoundError."""
    from zoohub.presets.resolve import resolve_preset

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return resolve_preset(handle)
    except PresetNotFoundError:
        raise  # no such preset: an error, as for every other verb
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
        elif key == "cached" and not value:
            print(f"cached: False (zoohub download {args.preset} fetches it)")
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
    # Every line is embedded, blank ones too (as TextEmbedder.predict embeds ""), so row i is line i.
    texts = path.read_text(encoding="utf-8").splitlines()
    if not texts:
        raise UsageError(f"{args.input}: the file is empty; write one text per line")
    vectors = zoohub.TextEmbedder.from_preset(args.preset).predict(texts)
    summary = f"{len(texts)} embeddings of dimension {vectors.shape[1]}"
    if args.output:
        np.save(args.output, vectors)
    if args.json:
        _print_json({"count": len(texts), "dim": int(vectors.shape[1]), "output": args.output,
                     "embeddings": None if args.output else vectors.tolist()})
    elif args.output:
        print(f"{summary} -> {args.output}")
    else:
        np.savetxt(sys.stdout, vectors, fmt="%.6g")  # one line per input line
        print(summary, file=sys.stderr)


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

    from zoohub.cli_seq2seq import load_generator  # a Seq2SeqLM for encoder-decoder presets

    lm = load_generator(args.preset)
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


def cmd_finetune(args) -> None:
    from zoohub.hub import env
    from zoohub.tasks.training.files import read_labelled

    train = read_labelled(args.train, args.text_column, args.label_column)
    val = read_labelled(args.validation, args.text_column, args.label_column) if args.validation else None
    bar = not env.quiet()  # on a terminal fit draws a bar and prints each epoch itself
    clf, history = finetune(args.preset, train, val, epochs=args.epochs, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, lora_rank=args.lora_rank, seed=args.seed,
                            callbacks=() if bar else (epoch_printer(args.epochs),), verbose=bar)
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

    run_demo(args.preset, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate)


# ---- parser ------------------------------------------------------------------------------

class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" after an option's help, except where there is no default to show."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _global_options(parser: argparse.ArgumentParser, default) -> None:
    """--backend and --debug, before the verb or after it (the verb's copies leave the first one alone)."""
    parser.add_argument("--backend", choices=["jax", "numpy"], default=default(None),
                        help="array backend; default: ZOOHUB_BACKEND, else jax when installed, else numpy "
                             "(inference only)")
    parser.add_argument("--debug", action="store_true", default=default(False),
                        help="show the traceback of an error (the exit code stays the same)")


def _training_options(p: argparse.ArgumentParser) -> None:
    """The settings demo and finetune share, with the same defaults."""
    p.add_argument("--epochs", type=int, default=EPOCHS, help="passes over the training data")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="sentences per step")
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                   help="AdamW step size (default: %(default)g, which suits the small starter; pretrained "
                        "base-size presets usually want 2e-5 to 5e-5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoohub", description="Load, run, fine-tune and upload model presets.",
                                     epilog="Run `zoohub COMMAND --help` for a command's options. Exit codes: 0 "
                                            "success, 1 the operation failed, 2 bad usage or input.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"zoohub {__version__}")
    _global_options(parser, lambda value: value)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, lambda value: argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help_text, description=None):
        p = sub.add_parser(name, help=help_text, description=description or help_text, parents=[common],
                           formatter_class=HelpFormatter)
        p.set_defaults(fn=fn)
        return p

    def preset_argument(p, help_text="registry name (zoohub list), hf://owner/repo[@revision], https:// folder, "
                                     "local://owner/name or a folder"):
        p.add_argument("preset", help=help_text)

    p = add("demo", cmd_demo, "offline tour: load, evaluate, fine-tune, upload and reload the starter preset",
            "Offline tour: load the bundled starter preset (a tiny toy model), evaluate it, fine-tune it on the "
            "bundled sentiment sentences, upload it to the local hub and load it back by name.")
    p.add_argument("--preset", default="starter_bert_tiny_en", help="the preset to fine-tune")
    _training_options(p)
    p = add("list", cmd_list, "list registered presets")
    p.add_argument("--task", help="only presets of this task (e.g. causal_lm, text_classifier)")
    p.add_argument("--family", help="only presets of this family (transformers model_type, e.g. bert, llama)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p = add("info", cmd_info, "show a preset's family, size, files, revision and cache state")
    preset_argument(p)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p = add("download", cmd_download, "fetch a preset into the cache and print its folder",
            "Fetch a preset into the cache and print its folder; loading it then needs no network. Takes "
            "registry names and every handle.")
    preset_argument(p)
    p.add_argument("--revision", help="branch, tag or commit (hf:// only); default: the registry's pinned commit")
    for name, fn, text in (("generate", cmd_generate, "generate text from a prompt"),
                           ("chat", cmd_chat, "chat on stdin with the checkpoint's chat template")):
        p = add(name, fn, text)
        preset_argument(p, "a causal LM (generate: or seq2seq) preset: registry name, handle or folder")
        if name == "generate":
            p.add_argument("prompt", help="the text to continue")
        else:
            p.add_argument("--system", help="a system message put before the conversation")
        p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most")
        p.add_argument("--sampler", choices=["greedy", "temperature", "top_k", "top_p", "beam"],
                       help="decoding strategy; default: greedy, or inferred from --temperature/--top-k/--top-p")
        p.add_argument("--temperature", type=float, help="softmax temperature for sampling")
        p.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
        p.add_argument("--top-p", type=float, help="sample among the most likely tokens whose probabilities sum to p")
        p.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    p = add("classify", cmd_classify, "classify texts with a TextClassifier preset")
    preset_argument(p, "a text classifier preset: registry name, handle or folder")
    p.add_argument("texts", nargs="+", help="one or more texts (quote each)")
    p.add_argument("--json", action="store_true", help="print labels and all scores as JSON")
    from zoohub.cli_tasks import add_task_verbs  # tag, answer, rerank

    add_task_verbs(add, preset_argument)
    from zoohub.cli_seq2seq import add_seq2seq_verbs  # translate

    add_seq2seq_verbs(add, preset_argument)
    p = add("embed", cmd_embed, "embed the lines of a text file",
            "Embed each line of a text file, blank lines included (row i is line i). Without --output or "
            "--json, print one line of numbers per input line.")
    preset_argument(p, "an embedder or encoder preset: registry name, handle or folder")
    p.add_argument("--input", required=True, help="a UTF-8 text file, one text per line")
    p.add_argument("--output", help="write the embeddings as a [lines, dim] float32 .npy file")
    p.add_argument("--json", action="store_true",
                   help="print count, dimension and (without --output) the embeddings as JSON")
    p = add("finetune", cmd_finetune, "fine-tune a text classifier on a CSV or JSONL file",
            "Fine-tune a text classifier on a CSV (header row) or JSON Lines file and save it as a preset. "
            "Labels: when every training label is one of the preset's own labels, its classification head is "
            "kept and trained further; otherwise a new, untrained head is made for the training labels "
            "(sorted) and a warning names the labels the preset did not have. One line per epoch (loss, "
            "accuracy) goes to stderr.")
    preset_argument(p)
    p.add_argument("--train", required=True, help="training file: .csv with a header row, or .jsonl")
    p.add_argument("--validation", help="validation file, same format; its metrics are shown per epoch")
    p.add_argument("--text-column", default="text", help="column (or JSON key) holding the text")
    p.add_argument("--label-column", default="label", help="column (or JSON key) holding the label")
    _training_options(p)
    p.add_argument("--lora-rank", type=int, help="train LoRA adapters of this rank instead of all weights "
                                                  "(saved merged)")
    p.add_argument("--seed", type=int, default=0, help="seed for the new head, shuffling and dropout")
    p.add_argument("--output", required=True, help="folder to save the fine-tuned preset in")
    p = add("upload", cmd_upload, "validate a preset folder and upload it (hf://, local://, file://)")
    p.add_argument("folder", help="the preset folder, e.g. written by zoohub finetune")
    p.add_argument("handle", help="hf://owner/repo[@branch], local://owner/name, file:///path or a folder")
    p.add_argument("--private", action="store_true", help="create the hub repo as private (hf:// only)")
    p.add_argument("--message", help="commit message; default: 'Upload NAME with zoohub'")
    p = add("serve", lambda args: importlib.import_module("zoohub.serve").run(args),
            "serve presets over an OpenAI-compatible HTTP API with a web page (needs zoohub[serve])")
    p.add_argument("preset", nargs="?", help="a causal LM or embedder preset: registry name, handle or folder")
    p.add_argument("--preset", dest="presets", action="append", help="another preset to serve (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; another than loopback needs --api-key")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--api-key", help="clients must send 'Authorization: Bearer KEY'")
    p.add_argument("--insecure-no-auth", action="store_true", help="allow a non-loopback --host without --api-key")
    p.add_argument("--slots", type=int, help="requests decoded together; default: from the model and free memory")
    p.add_argument("--context", type=int, help="tokens per slot (prompt + completion); default: the model's, <= 2048")
    p.add_argument("--prefill-chunk", type=int, default=64, help="prompt tokens prefilled between decode steps")
    p.add_argument("--max-queue", type=int, help="requests waiting for a slot before 503; default: 8 per slot")
    p = add("cache", cmd_cache, "list or clear downloaded files")
    p.add_argument("action", choices=["list", "clear"], help="list the cached presets, or delete them")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _set_backend(args)
        args.fn(args)
        return 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `zoohub list | head`: the reader left; say nothing (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        code = exit_code(e)
        if code is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(error_line(e), file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
