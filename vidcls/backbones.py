"""One record per frame backbone: everything vidcls relies on about each CNN, in one place.

Like torchvision's one ``Weights`` record per model, a :class:`BackboneSpec` carries what every
layer needs to know about a backbone: how to build it (``builder``, resolved by
:mod:`vidcls.models.backbone`), its feature width with the head replaced (``feature_dim``, what
the config checks a temporal model against), its parameter count, the torchvision weights it is
served with (enum name and version), the head that is replaced by identity, the normalization
those weights expect, and the layer table the GPU memory budget walks
(:mod:`vidcls.deploy_budget`). The tests check every record against torchvision's own weights
record (tests/test_backbones.py) and against the network torch builds from it (parameters,
feature width, the budget's layer walk: tests/test_deploy.py).

Torch-free: the config, the python-backend models, the client and the deployment budget import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# The normalization torchvision's ImageNet weights were trained with (values /255 first).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """What vidcls knows about one backbone.

    ``stages`` is the architecture's layer table, read according to ``family``:

    - ``efficientnet_v2``: (block kind ``"fused"`` | ``"mb"``, expand ratio, stride, output
      channels, layers) per stage, after a stride-2 stem conv of ``stem`` channels and before the
      1x1 head conv to ``feature_dim`` channels (torchvision's ``_efficientnet_conf``);
    - ``resnet``: bottleneck blocks per stage, after a stem of ``stem`` channels (stride-2 conv,
      max pool); stage i has width ``stem * 2**i`` and puts out 4x that;
    - ``tiny``: output channels of each stride-2 3x3 conv; the features are the average and the
      maximum over the last map, hence ``feature_dim`` = 2 x the last.
    """

    name: str
    # "module.callable" that builds the network (vidcls.models.backbone resolves it). A
    # torchvision builder takes ``weights=``; the weights enum is looked up in the same module.
    builder: str
    # Width of the features with the head replaced by identity.
    feature_dim: int
    # Parameters of that network (head removed).
    params: int
    family: str
    stages: tuple
    stem: int = 0
    # torchvision weights enum and the version served with ``--weights imagenet``; None: there
    # are no pretrained weights (random init, a local weights file).
    weights_enum: str | None = None
    weights_version: str | None = None
    # The attribute holding the classification head (replaced by identity); None: none.
    head: str | None = None
    # Normalization of the frames (after /255) the weights expect.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def pretrained(self) -> bool:
        """Whether ``--weights imagenet`` exists for this backbone."""
        return self.weights_enum is not None


def _records(*specs: BackboneSpec) -> dict[str, BackboneSpec]:
    return {spec.name: spec for spec in specs}


# In order of preference among backbones of one width (vidcls.config.backbones_for_width):
# efficientnet_v2_s before efficientnet_v2_m, resnet50 before resnet101.
BACKBONES: dict[str, BackboneSpec] = _records(
    BackboneSpec(
        "efficientnet_v2_s", "torchvision.models.efficientnet_v2_s", 1280, 20_177_488, "efficientnet_v2",
        (("fused", 1, 1, 24, 2), ("fused", 4, 2, 48, 4), ("fused", 4, 2, 64, 4),
         ("mb", 4, 2, 128, 6), ("mb", 6, 1, 160, 9), ("mb", 6, 2, 256, 15)),
        stem=24, weights_enum="EfficientNet_V2_S_Weights", weights_version="IMAGENET1K_V1", head="classifier"),
    BackboneSpec(
        "efficientnet_v2_m", "torchvision.models.efficientnet_v2_m", 1280, 52_858_356, "efficientnet_v2",
        (("fused", 1, 1, 24, 3), ("fused", 4, 2, 48, 5), ("fused", 4, 2, 80, 5),
         ("mb", 4, 2, 160, 7), ("mb", 6, 1, 176, 14), ("mb", 6, 2, 304, 18), ("mb", 6, 1, 512, 5)),
        stem=24, weights_enum="EfficientNet_V2_M_Weights", weights_version="IMAGENET1K_V1", head="classifier"),
    BackboneSpec(
        "resnet50", "torchvision.models.resnet50", 2048, 23_508_032, "resnet", (3, 4, 6, 3),
        stem=64, weights_enum="ResNet50_Weights", weights_version="IMAGENET1K_V2", head="fc"),
    BackboneSpec(
        "resnet101", "torchvision.models.resnet101", 2048, 42_500_160, "resnet", (3, 4, 23, 3),
        stem=64, weights_enum="ResNet101_Weights", weights_version="IMAGENET1K_V2", head="fc"),
    # Our own small random-init CNN for tests, the demo and offline use; not an ImageNet model
    # (it keeps the ImageNet normalization so that every backbone sees the same input).
    BackboneSpec("tiny", "vidcls.models.backbone.TinyCNN", 128, 60_512, "tiny", (16, 32, 64, 64)),
)
