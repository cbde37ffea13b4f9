"""Encoder presets of the second wave (MPNet, ModernBERT, DeBERTa-v3, ELECTRA, ALBERT) and the
per-token and pair tasks (NER taggers, extractive QA, rerankers), as data. Revisions pin a commit on
the Hugging Face Hub where a public one was found; `revision=None` rows follow the repo's main branch."""

ROWS: list[dict] = [
    # -- mpnet, albert, electra --
    # Only all-mpnet-base-v2's commit was found in several independent public cache paths; the other rows
    # follow main until a revision can be checked. mpnet-base: MIT as Microsoft's MPNet release (the hub
    # card's own tag was not checked).
    dict(name="all_mpnet_base_v2_en", handle="hf://sentence-transformers/all-mpnet-base-v2",
         revision="e8c3b32edf5434bc2275fc9bab85f82640a19130",
         description="Sentence embeddings (768-d, mean pooling, normalised); MPNet base fine-tuned on 1B sentence pairs.",
         params=109_486_464, license="apache-2.0", task="text_embedder", family="mpnet"),
    dict(name="mpnet_base_en", handle="hf://microsoft/mpnet-base", revision=None,
         description="MPNet base, English (12 layers, 768 wide, relative position bias), masked LM.",
         params=109_518_527, license="mit", task="masked_lm", family="mpnet"),
    dict(name="albert_base_en_v2", handle="hf://albert/albert-base-v2", revision=None,
         description="ALBERT base v2, English, uncased (one shared layer applied 12 times, 768 wide, 128-d embeddings).",
         params=11_221_680, license="apache-2.0", task="masked_lm", family="albert"),
    dict(name="electra_base_en_discriminator", handle="hf://google/electra-base-discriminator", revision=None,
         description="ELECTRA base discriminator, English (12 layers, 768 wide): the encoder to fine-tune.",
         params=108_891_648, license="apache-2.0", task="backbone", family="electra"),
    dict(name="electra_small_en_generator", handle="hf://google/electra-small-generator", revision=None,
         description="ELECTRA small generator, English (12 layers, 256 wide, 128-d embeddings), masked LM.",
         params=13_546_682, license="apache-2.0", task="masked_lm", family="electra"),
    dict(name="electra_base_en_squad2", handle="hf://deepset/electra-base-squad2", revision=None,
         description="ELECTRA base fine-tuned on SQuAD 2.0: extractive question answering (English).",
         params=108_893_186, license="cc-by-4.0", task="question_answerer", family="electra"),
    # -- deberta-v2, modernbert --
    # -- token classification, question answering, reranking --
]
