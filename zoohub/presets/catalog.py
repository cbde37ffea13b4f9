"""Named presets as data. Revisions pin the exact commit on the Hugging Face Hub."""

ROWS: list[dict] = [
    dict(name="starter_bert_tiny_en", handle="local://zoohub/starter-bert-tiny", revision=None,
         description="Randomly initialised tiny BERT (2x64) shipped in the package for the offline demo; fine-tune it first.",
         params=94_082, license="apache-2.0", task="text_classifier", family="bert", bundled="starter-bert-tiny"),
    dict(name="bert_base_en_uncased", handle="hf://google-bert/bert-base-uncased",
         revision="86b5e0934494bd15c9632b12f734a8a67f723594",
         description="BERT base, English, uncased (12 layers, 768 wide).", params=109_482_240,
         license="apache-2.0", task="masked_lm", family="bert"),
]
