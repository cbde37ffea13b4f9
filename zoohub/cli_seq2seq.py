"""The `zoohub` command's encoder-decoder side: `generate` on a seq2seq preset, and `translate`.

    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> verbs = parser.add_subparsers()
    >>> add_seq2seq_verbs(lambda name, fn, text: verbs.add_parser(name), lambda p, text="": p.add_argument("preset"))
    >>> parser.parse_args(["translate", "t5_small", "hello", "--target-lang", "de"]).target_lang
    'de'
"""
from __future__ import annotations


def load_generator(handle: str):
    """A Seq2SeqLM for an encoder-decoder preset (T5, BART, Marian...), else a CausalLM."""
    import zoohub
    from zoohub.backbones import get_family
    from zoohub.presets.folder import read_config
    from zoohub.presets.resolve import resolve_preset

    folder = resolve_preset(handle)
    family = get_family(read_config(folder)["model_type"])
    cls = zoohub.Seq2SeqLM if family.is_encoder_decoder else zoohub.CausalLM
    return cls.from_preset(folder)


def cmd_translate(args) -> None:
    import zoohub

    model = zoohub.Seq2SeqLM.from_preset(args.preset)
    out = model.translate(args.texts, source_lang=args.source_lang, target_lang=args.target_lang,
                          max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    for line in out:
        print(line)


def add_seq2seq_verbs(add, preset_argument) -> None:
    """Register `translate` on the parser (`add(name, fn, help)` returns its subparser)."""
    p = add("translate", cmd_translate, "translate texts with a seq2seq preset (T5 prefixes, Marian, mBART tokens)")
    preset_argument(p, "an encoder-decoder preset: registry name, handle or folder")
    p.add_argument("texts", nargs="+", help="one or more texts (quote each)")
    p.add_argument("--source-lang", help="source language (T5: en; mBART-style: en_XX)")
    p.add_argument("--target-lang", help="target language (T5: de, fr, ro; mBART-style: de_DE; Marian multilingual: fra)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (1: greedy)")
