"""Encoder-decoder presets (T5, Flan-T5, mT5, BART, Marian), as data. Revisions pin a commit on the
Hugging Face Hub where a public one was found; `revision=None` rows follow the repo's main branch."""

ROWS: list[dict] = [
    # -- t5, flan-t5, mt5 --
    # Unpinned: no public commit hash of these repos was found in time (they follow main).
    dict(name="t5_small_en", handle="hf://google-t5/t5-small", revision=None,
         description="T5 v1.0 small (6+6 layers, 512 wide): multi-task text-to-text (translate English to German/"
                     "French/Romanian, summarize) through its task prefixes.",
         params=60_506_624, license="apache-2.0", task="seq2seq_lm", family="t5"),
    dict(name="t5_base_en", handle="hf://google-t5/t5-base", revision=None,
         description="T5 v1.0 base (12+12 layers, 768 wide): multi-task text-to-text with task prefixes.",
         params=222_903_552, license="apache-2.0", task="seq2seq_lm", family="t5"),
    dict(name="flan_t5_small", handle="hf://google/flan-t5-small", revision=None,
         description="Flan-T5 small (T5 v1.1, gated GELU, 8+8 layers): instruction-tuned text-to-text.",
         params=76_961_152, license="apache-2.0", task="seq2seq_lm", family="t5"),
    dict(name="flan_t5_base", handle="hf://google/flan-t5-base", revision=None,
         description="Flan-T5 base (T5 v1.1, 12+12 layers, 768 wide): instruction-tuned text-to-text.",
         params=247_577_856, license="apache-2.0", task="seq2seq_lm", family="t5"),
    dict(name="flan_t5_large", handle="hf://google/flan-t5-large", revision=None,
         description="Flan-T5 large (T5 v1.1, 24+24 layers, 1024 wide): instruction-tuned text-to-text.",
         params=783_150_080, license="apache-2.0", task="seq2seq_lm", family="t5"),
    dict(name="mt5_small", handle="hf://google/mt5-small", revision=None,
         description="mT5 small (101 languages, 250k SentencePiece vocabulary): pretrained only, fine-tune it first.",
         params=300_176_768, license="apache-2.0", task="seq2seq_lm", family="mt5"),
    # -- bart, marian --
    # Pins: commits seen in independent public cache paths (models--owner--repo/snapshots/<commit>).
    dict(name="bart_base_en", handle="hf://facebook/bart-base", revision="aadd2ab0ae0c8268c7c9693540e9904811f36177",
         description="BART base (6+6 layers, 768 wide, byte-level BPE): a denoising encoder-decoder to fine-tune.",
         params=139_420_416, license="apache-2.0", task="seq2seq_lm", family="bart"),
    dict(name="bart_large_cnn_en", handle="hf://facebook/bart-large-cnn",
         revision="37f520fa929c961707657b28798b30c003dd100b",
         description="BART large fine-tuned on CNN/DailyMail: English news summarization (12+12 layers, 1024 wide).",
         params=406_290_432, license="mit", task="seq2seq_lm", family="bart"),
    dict(name="opus_mt_en_de", handle="hf://Helsinki-NLP/opus-mt-en-de", revision=None,
         description="Marian translator English -> German (OPUS-MT, 6+6 layers, 512 wide, SentencePiece).",
         params=73_886_208, license="cc-by-4.0", task="seq2seq_lm", family="marian"),
    dict(name="opus_mt_de_en", handle="hf://Helsinki-NLP/opus-mt-de-en", revision=None,
         description="Marian translator German -> English (OPUS-MT, 6+6 layers, 512 wide, SentencePiece).",
         params=73_886_208, license="cc-by-4.0", task="seq2seq_lm", family="marian"),
    dict(name="opus_mt_en_fr", handle="hf://Helsinki-NLP/opus-mt-en-fr", revision="dd7f6540a7a48a7f4db59e5c0b9c42c8eea67f18",
         description="Marian translator English -> French (OPUS-MT, 6+6 layers, 512 wide, SentencePiece).",
         params=74_609_664, license="apache-2.0", task="seq2seq_lm", family="marian"),
]
