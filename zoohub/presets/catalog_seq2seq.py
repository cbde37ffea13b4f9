"""Encoder-decoder presets (T5, Flan-T5, mT5, BART, Marian), as data. Revisions pin a commit on the
Hugging Face Hub where a public one was found; `revision=None` rows follow the repo's main branch."""

ROWS: list[dict] = [
    # -- t5, flan-t5, mt5 --
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
