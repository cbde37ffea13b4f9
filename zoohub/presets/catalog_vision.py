"""Named vision presets as data. Revisions pin commits seen in several independent public cache paths;
`revision=None` (the repo's main branch) where the public record disagrees, since an invented pin would
be worse than none."""

ROWS: list[dict] = [
    dict(name="vit_base_patch16_224_imagenet", handle="hf://google/vit-base-patch16-224",
         revision="3f49326eb077187dfe1c2a2bb15fbd74e6ab91e3",
         description="ViT-Base/16 at 224x224, ImageNet-21k pre-trained, ImageNet-1k fine-tuned (1000 classes).",
         params=86_567_656, license="apache-2.0", task="image_classifier", family="vit"),
    dict(name="vit_base_patch16_224_in21k", handle="hf://google/vit-base-patch16-224-in21k", revision=None,
         description="ViT-Base/16 at 224x224, ImageNet-21k pre-trained backbone (add a head with num_classes=N).",
         params=86_389_248, license="apache-2.0", task="image_classifier", family="vit"),
]
