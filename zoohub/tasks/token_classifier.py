"""TokenClassifier: per-token labels (`...ForTokenClassification`: NER, POS), grouped into words and
entities with character offsets the way transformers' token-classification pipeline groups them."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoohub.errors import InputError, MissingFileError
from zoohub.tasks.labels import LabelledHead
from zoohub.tasks.probabilities import softmax
from zoohub.tasks.text_task import TextTask, as_text_list
from zoohub.tasks.tokenizer import pad_batch

AGGREGATIONS = ("none", "simple", "first", "average", "max")


def encoding_inputs(task: TextTask, encodings) -> dict[str, np.ndarray]:
    """Padded model inputs [B, T] from `tokenizers` Encodings (ids, mask and, when the family reads them, segments)."""
    length = max(len(e.ids) for e in encodings)
    ids, mask = pad_batch([e.ids for e in encodings], length=length, pad_id=task.tokenizer.pad_token_id)
    out = {"input_ids": ids, "attention_mask": mask}
    if task.family.token_types:
        out["token_type_ids"], _ = pad_batch([e.type_ids for e in encodings], length=length, pad_id=0)
    return out


def _split_tag(label: str) -> tuple[str, str]:
    """("B" or "I", entity type) of an IOB label; a label without a B-/I- prefix continues (I)."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


class TokenClassifier(LabelledHead, TextTask):
    """Label every token (named entities, parts of speech); `tag` groups tokens into words and entities.

    Args of `from_preset`: `num_classes` / `labels` (a new head, e.g. on a masked-LM checkpoint),
    `sequence_length`, `batch_size`, `dtype`.

    Example:
        >>> import zoohub
        >>> ner = zoohub.TokenClassifier.from_preset("starter_bert_tiny_en",   # bundled toy: a new, untrained head
        ...                                          labels=["O", "B-LOC", "I-LOC"])
        >>> ner.predict(["a great film"]).shape                      # [B, T, num_classes], T with [CLS]/[SEP]
        (1, 5, 3)
        >>> [t["word"] for t in ner.tag("A great film", ignore_labels=[])]   # every token, none left out
        ['a', 'great', 'film']
        >>> entity = ner.tag("A great film", aggregate="first", ignore_labels=[])[0]   # words, then entities
        >>> sorted(entity), entity["start"]
        (['end', 'entity_group', 'score', 'start', 'word'], 0)
    """

    TASK = "token_classifier"
    HEAD_SUFFIX = "ForTokenClassification"

    def _configure(self, num_classes=None, labels=None, **options) -> None:
        super()._configure(**options)
        self.label_all_subwords = False

    def fit(self, x, y=None, *, label_all_subwords: bool = False, **options):
        """Fine-tune on words and word labels (or token arrays and token labels, -100 where ignored); see
        `zoohub.tasks.training.data_tokens.token_classifier_data`. A word's first token carries its label
        and its other tokens none, or all of them with `label_all_subwords`. Other options: `fit`'s."""
        self.label_all_subwords = label_all_subwords
        return super().fit(x, y, **options)

    def logits(self, x, pairs=None) -> np.ndarray:
        """Raw logits [B, T, num_classes] (T = the longest input, special tokens included)."""
        out, inputs = self._run(x, pairs)
        return out[:, : inputs["input_ids"].shape[1]]

    def predict(self, x, pairs=None) -> np.ndarray:
        """Per-token class probabilities [B, T, num_classes]."""
        return softmax(self.logits(x, pairs))

    # ---- entities ----------------------------------------------------------------------------
    def tag(self, texts: str | Sequence[str], aggregate: str = "none",
            ignore_labels: Sequence[str] = ("O",)) -> list[dict] | list[list[dict]]:
        """Labelled tokens, words or entities with character offsets into each text.

        `aggregate`: "none" (one dict per token: entity, score, index, word, start, end), "simple"
        (adjacent tokens of one entity type grouped: entity_group, score = their mean, word, start, end),
        "first" / "average" / "max" (tokens of a word first agree on the word's label: its first
        token's, the mean of its tokens' probabilities, or its most confident token's; then grouped).
        Special tokens are left out, and results whose label is in `ignore_labels`. One list per text
        (a plain list for a single string)."""
        if aggregate not in AGGREGATIONS:
            raise InputError(f"aggregate={aggregate!r} is not one of {', '.join(AGGREGATIONS)}")
        if self.tokenizer is None:
            raise MissingFileError("this preset has no tokenizer files; tag needs one for the offsets")
        single = isinstance(texts, str)
        texts = as_text_list(texts)
        encodings = self.tokenizer.encodings(texts, max_length=self.sequence_length)
        probabilities = softmax(self._run_batches(encoding_inputs(self, encodings))[0])
        results = []
        for text, enc, probs in zip(texts, encodings, probabilities):
            tokens = self._tokens(text, enc, probs[: len(enc.ids)], aggregate)
            found = self._group(tokens, aggregate)
            results.append([e for e in found if e.get("entity", e.get("entity_group")) not in ignore_labels])
        return results[0] if single else results

    def _tokens(self, text: str, enc, probs: np.ndarray, aggregate: str) -> list[dict]:
        """The non-special tokens: token string, probabilities, offsets, and whether each continues a word."""
        prefix = getattr(self.tokenizer.backend.model, "continuing_subword_prefix", None)
        unk = self.tokenizer.token_id("unk_token")
        out = []
        for index, (token_id, special) in enumerate(zip(enc.ids, enc.special_tokens_mask)):
            if special:
                continue
            word = self.tokenizer.id_to_token(token_id)
            start, end = enc.offsets[index]
            if prefix:  # a word-aware vocabulary (WordPiece "##"): a piece is longer than its text
                continues = len(word) != len(text[start:end])
            else:  # byte-level BPE: the pipeline's heuristic, a piece not preceded by a space
                continues = start > 0 and " " not in text[start - 1:start + 1]
            if token_id == unk:
                word, continues = text[start:end], False
            out.append({"word": word, "scores": probs[index], "start": start, "end": end, "index": index,
                        "continues": continues})
        return out

    def _group(self, tokens: list[dict], aggregate: str) -> list[dict]:
        if aggregate in ("none", "simple"):
            labelled = [{"entity": self.labels[int(t["scores"].argmax())], "score": float(t["scores"].max()),
                         "index": t["index"], "word": t["word"], "start": t["start"], "end": t["end"]}
                        for t in tokens]
            if aggregate == "none":
                return labelled
        else:
            words: list[list[dict]] = []
            for t in tokens:
                if words and t["continues"]:
                    words[-1].append(t)
                else:
                    words.append([t])
            labelled = [self._word(pieces, aggregate) for pieces in words]
        return self._entities(labelled)

    def _word(self, pieces: list[dict], aggregate: str) -> dict:
        """One word's label from its tokens, by the aggregation rule."""
        if aggregate == "first":
            scores = pieces[0]["scores"]
        elif aggregate == "max":
            scores = max(pieces, key=lambda p: p["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([p["scores"] for p in pieces]), axis=0)
        best = int(scores.argmax())
        return {"entity": self.labels[best], "score": float(scores[best]),
                "word": self.tokenizer.tokens_to_string([p["word"] for p in pieces]),
                "start": pieces[0]["start"], "end": pieces[-1]["end"]}

    def _entities(self, labelled: list[dict]) -> list[dict]:
        """Adjacent tokens or words of one entity type, each group started anew by a B- label."""
        groups: list[list[dict]] = []
        for item in labelled:
            position, kind = _split_tag(item["entity"])
            if groups and position != "B" and kind == _split_tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(item)
            else:
                groups.append([item])
        return [{"entity_group": group[0]["entity"].split("-", 1)[-1],
                 "score": float(np.nanmean([g["score"] for g in group])),
                 "word": self.tokenizer.tokens_to_string([g["word"] for g in group]),
                 "start": group[0]["start"], "end": group[-1]["end"]} for group in groups]
