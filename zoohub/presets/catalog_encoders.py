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
    # No revision of these repos could be checked here: every row follows main. Which files each repo holds
    # was not checked either: zoohub loads safetensors and tokenizer.json only, and the microsoft DeBERTa-v3
    # repos were published with pytorch_model.bin and spm.model (a converted copy or a sentencepiece reader
    # is needed for them). Licenses as the repos' model cards state them (DeBERTa: MIT; ModernBERT: Apache-2.0).
    dict(name="deberta_v3_base_en", handle="hf://microsoft/deberta-v3-base", revision=None,
         description="DeBERTa-v3 base, English (12 layers, 768 wide, disentangled attention over 256 log-bucketed relative positions).",
         params=183_831_552, license="mit", task="backbone", family="deberta-v2"),
    dict(name="deberta_v3_small_en", handle="hf://microsoft/deberta-v3-small", revision=None,
         description="DeBERTa-v3 small, English (6 layers, 768 wide, 128k-token vocabulary).",
         params=141_304_320, license="mit", task="backbone", family="deberta-v2"),
    dict(name="deberta_v3_large_en", handle="hf://microsoft/deberta-v3-large", revision=None,
         description="DeBERTa-v3 large, English (24 layers, 1024 wide).",
         params=434_012_160, license="mit", task="backbone", family="deberta-v2"),
    dict(name="deberta_v3_base_en_nli", handle="hf://MoritzLaurer/DeBERTa-v3-base-mnli-fever-anli", revision=None,
         description="DeBERTa-v3 base fine-tuned for natural language inference (entailment / neutral / contradiction) on MNLI, FEVER and ANLI.",
         params=184_424_451, license="mit", task="text_classifier", family="deberta-v2"),
    dict(name="deberta_v3_base_en_nli_cross_encoder", handle="hf://cross-encoder/nli-deberta-v3-base", revision=None,
         description="Cross-encoder for NLI on (premise, hypothesis) pairs: contradiction / entailment / neutral (SNLI + MultiNLI).",
         params=184_424_451, license="apache-2.0", task="text_classifier", family="deberta-v2"),
    dict(name="modernbert_base_en", handle="hf://answerdotai/ModernBERT-base", revision=None,
         description="ModernBERT base, English and code (22 layers, 768 wide, RoPE, local/global attention, 8192 tokens), masked LM.",
         params=149_655_232, license="apache-2.0", task="masked_lm", family="modernbert"),
    dict(name="modernbert_large_en", handle="hf://answerdotai/ModernBERT-large", revision=None,
         description="ModernBERT large, English and code (28 layers, 1024 wide, 8192 tokens), masked LM.",
         params=395_881_664, license="apache-2.0", task="masked_lm", family="modernbert"),
    dict(name="modernbert_embed_base_en", handle="hf://nomic-ai/modernbert-embed-base", revision=None,
         description="Sentence embeddings from ModernBERT base (768-d, mean pooling; Matryoshka to 256-d); "
                     "texts take a 'search_query: ' or 'search_document: ' prefix.",
         params=149_014_272, license="apache-2.0", task="text_embedder", family="modernbert"),
    dict(name="gte_modernbert_base_en", handle="hf://Alibaba-NLP/gte-modernbert-base", revision=None,
         description="GTE sentence embeddings from ModernBERT base (768-d, CLS pooling, 8192 tokens).",
         params=149_014_272, license="apache-2.0", task="text_embedder", family="modernbert"),
    dict(name="gte_reranker_modernbert_base_en", handle="hf://Alibaba-NLP/gte-reranker-modernbert-base", revision=None,
         description="GTE cross-encoder reranker on ModernBERT base: one relevance score per (query, passage) pair.",
         params=149_605_633, license="apache-2.0", task="reranker", family="modernbert"),
    # -- token classification, question answering, reranking --
    dict(name="bert_base_ner_en", handle="hf://dslim/bert-base-NER", revision=None,
         description="Named entities (CoNLL-2003: PER, ORG, LOC, MISC in IOB tags); BERT base, cased.",
         params=107_726_601, license="mit", task="token_classifier", family="bert"),
    dict(name="bert_large_ner_en", handle="hf://dslim/bert-large-NER", revision=None,
         description="Named entities (CoNLL-2003: PER, ORG, LOC, MISC in IOB tags); BERT large, cased.",
         params=332_538_889, license="mit", task="token_classifier", family="bert"),
    dict(name="roberta_base_squad2_en", handle="hf://deepset/roberta-base-squad2",
         revision="adc3b06f79f797d1c575d5479d6f5efe54a9e3b4",
         description="Extractive QA trained on SQuAD 2.0 (unanswerable questions too: handle_impossible_answer); RoBERTa base.",
         params=124_056_578, license="cc-by-4.0", task="question_answerer", family="roberta"),
    dict(name="distilbert_base_cased_squad_en", handle="hf://distilbert/distilbert-base-cased-distilled-squad",
         revision=None, description="Extractive QA distilled on SQuAD 1.1; DistilBERT base, cased.",
         params=65_192_450, license="apache-2.0", task="question_answerer", family="distilbert"),
    dict(name="ms_marco_minilm_l12_v2_cross_encoder", handle="hf://cross-encoder/ms-marco-MiniLM-L-12-v2",
         revision=None, description="Cross-encoder for passage re-ranking (MS MARCO): (query, passage) -> relevance; 12-layer MiniLM.",
         params=33_360_385, license="apache-2.0", task="reranker", family="bert"),
    dict(name="bge_reranker_base", handle="hf://BAAI/bge-reranker-base",
         revision="2cfc18c9415c912f9d8155881c133215df768a70",
         description="Cross-encoder reranker, English and Chinese (BAAI BGE); XLM-RoBERTa base, one relevance logit.",
         params=278_044_417, license="mit", task="reranker", family="xlm-roberta"),
]
