"""ImageClassifier: image classification with transformers' heads (`ViTForImageClassification`)."""
from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from zoohub.backend import ops, using
from zoohub.errors import InputError
from zoohub.tasks.base import Task
from zoohub.tasks.image_preprocessor import ImagePreprocessor
from zoohub.tasks.labels import LabelledHead
from zoohub.tasks.probabilities import softmax
from zoohub.tasks.tokenizer import bucket_length

PREPROCESSOR_FILE = "preprocessor_config.json"


def image_preprocessor(task: Task) -> ImagePreprocessor:
    """The task's preprocessor from `preprocessor_config.json`, written back when it was missing
    so a saved preset is complete for transformers' AutoImageProcessor too."""
    raw = task.aux_files.get(PREPROCESSOR_FILE)
    preprocessor = ImagePreprocessor(json.loads(raw) if raw else None, image_size=task.config.image_size)
    if raw is None:
        task.aux_files[PREPROCESSOR_FILE] = (json.dumps(preprocessor.to_config(), indent=2) + "\n").encode()
    return preprocessor


def run_image_batches(task: Task, pixels: np.ndarray) -> np.ndarray:
    """task._outputs over [N, C, H, W] pixels in batches padded to bucket sizes (jax compiles few shapes)."""
    if "outputs" not in task._compiled:
        task._compiled["outputs"] = ops().jit(lambda params, inputs: task._outputs(params, inputs))
    fn = task._compiled["outputs"]
    chunks = []
    for start in range(0, len(pixels), task.batch_size):
        batch = pixels[start:start + task.batch_size]
        b = len(batch)
        padded = bucket_length(b, minimum=1, maximum=task.batch_size) if task.backend == "jax" else b
        batch = np.pad(batch, ((0, padded - b), (0, 0), (0, 0), (0, 0)))
        chunks.append(ops().to_numpy(fn(task.params, {"pixel_values": batch}))[:b])
    return np.concatenate(chunks)


def pixel_inputs(preprocessor: ImagePreprocessor, images) -> dict[str, np.ndarray]:
    """{"pixel_values": [N, C, H, W] float32} from images, or a dict with pixel_values passed through."""
    if isinstance(images, Mapping):
        if "pixel_values" not in images:
            raise InputError("image inputs given as a dict need a 'pixel_values' array [N, C, H, W]")
        return {"pixel_values": np.asarray(images["pixel_values"], np.float32)}
    return {"pixel_values": preprocessor(images)}


class ImageClassifier(LabelledHead, Task):
    """Classify images. Loads the checkpoint's head, or makes a new one with `num_classes`.

    Images are channels-last uint8 or float arrays ([H, W, C] each, or one [N, H, W, C] array), PIL
    images, or file paths; `preprocessor_config.json` says how to resize and normalize them.

    Args of `from_preset`: `num_classes` (needed when the checkpoint has no classifier, or to replace
    its head), `labels` (names, in class order), `batch_size`, `dtype`.

    Example:
        The bundled `toy_vit` is a random toy (32x32 images, 3 classes); real ones are e.g.
        "vit_base_patch16_224_imagenet" (downloaded once), with ImageNet's 1000 labels.

        >>> import numpy as np, zoohub
        >>> vit = zoohub.ImageClassifier.from_preset("toy_vit")
        >>> vit.labels
        ['LABEL_0', 'LABEL_1', 'LABEL_2']
        >>> images = np.random.default_rng(0).integers(0, 256, (4, 48, 40, 3), dtype=np.uint8)  # resized to 32x32
        >>> vit.predict(images).shape                                       # probabilities [N, num_classes]
        (4, 3)
        >>> best = vit.top_k(images, k=2)                                   # per image: the k best (label, p)
        >>> len(best), len(best[0]), best[0][0][0] in vit.labels
        (4, 2, True)
        >>> vit = zoohub.ImageClassifier.from_preset("toy_vit", num_classes=2, labels=["cat", "dog"])  # new head
        >>> vit.predict(images).shape           # fine-tune it with vit.fit(images, labels) (zoohub.tasks.training)
        (4, 2)
    """

    TASK = "image_classifier"
    HEAD_SUFFIX = "ForImageClassification"

    def _configure(self, num_classes=None, labels=None, batch_size: int = 32, **options) -> None:
        super()._configure(**options)
        self.batch_size = batch_size
        # ViTForImageClassification has no pooler; a ViTModel checkpoint's would be saved as junk.
        self.family.backbone_params(self.params).pop("pooler", None)
        self.preprocessor = image_preprocessor(self)

    def preprocessing_metadata(self) -> dict:
        return {"image_size": [self.preprocessor.height, self.preprocessor.width]}

    def preprocess(self, images) -> dict[str, np.ndarray]:
        """{"pixel_values": [N, C, H, W] float32} from images, or pass a dict with pixel_values through."""
        return pixel_inputs(self.preprocessor, images)

    def logits(self, images) -> np.ndarray:
        """Raw logits [N, num_classes], in batches padded to bucket sizes so jax compiles few shapes."""
        pixels = self.preprocess(images)["pixel_values"]
        with using(self.backend):  # a model keeps the backend it was built on
            return self._logits(pixels)

    def _logits(self, pixels: np.ndarray) -> np.ndarray:
        return run_image_batches(self, pixels)

    def predict(self, images) -> np.ndarray:
        """Class probabilities [N, num_classes]."""
        return softmax(self.logits(images))

    def top_k(self, images, k: int = 5) -> list[list[tuple[str, float]]]:
        """The k most likely (label, probability) pairs per image, best first, named by id2label."""
        probs = self.predict(images)
        order = np.argsort(-probs, axis=-1)[:, :k]
        return [[(self.labels[j], float(p[j])) for j in row] for p, row in zip(probs, order)]

    def classify(self, images) -> list[str]:
        """The most likely label name per image."""
        return [self.labels[i] for i in self.predict(images).argmax(-1)]
