"""The per-token and pair verbs of the `zoohub` command: tag, answer, rerank (registered in `zoohub.cli`).

    zoohub tag PRESET "Paris is in France" --aggregate simple --json
    zoohub answer PRESET --question "Where is Paris?" --context "Paris is in France."
    zoohub rerank PRESET --query "capital of France" "Paris is the capital." "Bananas are yellow." --top-k 1
"""
from __future__ import annotations

import json
from pathlib import Path

from zoohub.errors import InputError
from zoohub.tasks.token_classifier import AGGREGATIONS


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=float))


def cmd_tag(args) -> None:
    import zoohub

    tagger = zoohub.TokenClassifier.from_preset(args.preset)
    found = tagger.tag(args.texts, aggregate=args.aggregate, ignore_labels=args.ignore_label or ["O"])
    if args.json:
        _print_json([{"text": t, "entities": e} for t, e in zip(args.texts, found)])
        return
    for text, entities in zip(args.texts, found):
        print(text)
        for e in entities:
            label = e.get("entity_group", e.get("entity"))
            print(f"  {label:>12} {e['score']:.3f}  {e['start']:>4}-{e['end']:<4} {text[e['start']:e['end']]}")


def cmd_answer(args) -> None:
    import zoohub

    if (args.context is None) == (args.context_file is None):
        raise InputError("give the context as --context TEXT or --context-file FILE (one of them)")
    if args.context_file is not None:
        path = Path(args.context_file)
        if not path.is_file():
            raise InputError(f"{args.context_file}: no such file")
        context = path.read_text(encoding="utf-8")
    else:
        context = args.context
    qa = zoohub.QuestionAnswerer.from_preset(args.preset)
    found = qa.answer(args.question, context, top_k=args.top_k, max_answer_length=args.max_answer_length,
                      handle_impossible_answer=args.allow_no_answer)
    answers = found if isinstance(found, list) else [found]
    if args.json:
        _print_json(answers)
        return
    for a in answers:
        print(f"{a['score']:.3f}  {a['start']}-{a['end']}  {a['answer'] or '(no answer)'}")


def cmd_rerank(args) -> None:
    import zoohub

    ranked = zoohub.Reranker.from_preset(args.preset).rerank(args.query, args.passages, top_k=args.top_k)
    if args.json:
        _print_json(ranked)
        return
    for r in ranked:
        print(f"{r['score']:.4f}  [{r['index']}] {r['text']}")


def add_task_verbs(add, preset_argument) -> None:
    """Register tag, answer and rerank with `zoohub.cli.build_parser`'s `add` and `preset_argument`."""
    p = add("tag", cmd_tag, "label the tokens of texts (named entities) with a TokenClassifier preset")
    preset_argument(p, "a token classifier preset: registry name, handle or folder")
    p.add_argument("texts", nargs="+", help="one or more texts (quote each)")
    p.add_argument("--aggregate", choices=AGGREGATIONS, default="simple",
                   help="group tokens into words and entities (none: one line per token)")
    p.add_argument("--ignore-label", action="append",
                   help="a label to leave out (repeatable); default: O")
    p.add_argument("--json", action="store_true", help="print the entities as JSON")
    p = add("answer", cmd_answer, "answer a question from a context with a QuestionAnswerer preset",
            "Extract the answer to a question from a context text (a span of it); long contexts are read "
            "in overlapping windows.")
    preset_argument(p, "an extractive QA preset: registry name, handle or folder")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--context", help="the text that holds the answer")
    p.add_argument("--context-file", help="a UTF-8 file that holds the answer (instead of --context)")
    p.add_argument("--top-k", type=int, default=1, help="how many answers to show")
    p.add_argument("--max-answer-length", type=int, default=15, help="longest answer, in tokens")
    p.add_argument("--allow-no-answer", action="store_true",
                   help="the empty answer competes too (SQuAD 2.0 models)")
    p.add_argument("--json", action="store_true", help="print the answers as JSON")
    p = add("rerank", cmd_rerank, "order passages by relevance to a query with a cross-encoder preset")
    preset_argument(p, "a reranker (cross-encoder) preset: registry name, handle or folder")
    p.add_argument("--query", required=True, help="the query")
    p.add_argument("passages", nargs="+", help="the passages to order (quote each)")
    p.add_argument("--top-k", type=int, help="show only the best k")
    p.add_argument("--json", action="store_true", help="print [{index, score, text}] as JSON")


__all__ = ["add_task_verbs", "cmd_tag", "cmd_answer", "cmd_rerank"]
