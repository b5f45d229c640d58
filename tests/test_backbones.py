"""The backbone records (vidcls.backbones): what the config, the budget and the docs read.

The networks themselves are built and measured against the records in tests/test_deploy.py
(parameters, feature width, the budget's layer walk); here: each record against torchvision's own
weights record, and the config and the docs against the records.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from vidcls.backbones import BACKBONES
from vidcls.config import BACKBONE_DIMS, EXTERNAL_BACKBONE, VidclsConfig, backbones_for_width, default_backbone_weights

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = [name for name, spec in BACKBONES.items() if spec.pretrained]


def test_records_are_named_and_complete():
    assert PRETRAINED and "tiny" in BACKBONES and VidclsConfig().backbone in PRETRAINED
    for name, spec in BACKBONES.items():
        assert spec.name == name and spec.feature_dim > 0 and spec.params > 0 and spec.stages
        assert (spec.weights_enum is None) == (spec.weights_version is None) == (spec.head is None), name


@pytest.mark.parametrize("name", PRETRAINED)
def test_record_is_torchvisions_weights(name):
    """The weights enum and version exist, belong to the builder's architecture (torchvision's
    parameter count = ours + the ImageNet head on our feature width) and expect our normalization."""
    pytest.importorskip("torchvision")
    spec = BACKBONES[name]
    module_name, builder = spec.builder.rsplit(".", 1)
    module = importlib.import_module(module_name)
    assert callable(getattr(module, builder))
    weights = getattr(getattr(module, spec.weights_enum), spec.weights_version)
    assert getattr(module, "get_model_weights")(builder) is type(weights)
    classes = len(weights.meta["categories"])
    assert weights.meta["num_params"] == spec.params + spec.feature_dim * classes + classes
    transform = weights.transforms()
    assert tuple(transform.mean) == pytest.approx(spec.mean) and tuple(transform.std) == pytest.approx(spec.std)


def test_tiny_is_ours():
    spec = BACKBONES["tiny"]
    assert spec.builder == "vidcls.models.backbone.TinyCNN" and not spec.pretrained
    assert spec.feature_dim == 2 * spec.stages[-1]  # average and maximum of the last map
    assert default_backbone_weights("tiny") == "none"


def test_config_reads_the_records():
    assert BACKBONE_DIMS == {name: spec.feature_dim for name, spec in BACKBONES.items()}
    for name, spec in BACKBONES.items():
        config = VidclsConfig.for_backbone(name)
        assert (config.feature_dim, config.mean, config.std) == (spec.feature_dim, spec.mean, spec.std)
        assert default_backbone_weights(name) == ("imagenet" if spec.pretrained else "none")
    # Preferred first among equal widths: the records' order.
    assert backbones_for_width(1280) == ["efficientnet_v2_s", "efficientnet_v2_m"]
    assert backbones_for_width(2048) == ["resnet50", "resnet101"]
    assert default_backbone_weights(EXTERNAL_BACKBONE) == "imagenet"
    assert (VidclsConfig().mean, VidclsConfig().std) == (BACKBONES["efficientnet_v2_s"].mean,
                                                          BACKBONES["efficientnet_v2_s"].std)


def test_docs_say_what_the_records_say():
    design = (ROOT / "docs" / "design.md").read_text()
    row = next(line for line in design.splitlines() if line.startswith("| backbones |"))
    for name, spec in BACKBONES.items():
        if spec.pretrained:
            assert f"{name} (" in row and re.search(rf"{name} \((default, )?{spec.feature_dim}-d\)", row), name
            assert spec.weights_version in row, name
        else:
            assert f"`{name}`" in row
    assert "vidcls/backbones.py" in row
    mean = ", ".join(str(v) for v in VidclsConfig().mean)
    assert f"mean ({mean})" in design
    # docs/checkpoints.md: which backbone an import records for each width, and the alternatives.
    doc = (ROOT / "docs" / "checkpoints.md").read_text()
    for width in sorted({spec.feature_dim for spec in BACKBONES.values()}):
        first, *others = backbones_for_width(width)
        line = next((x for x in doc.splitlines() if x.startswith(f"| {width} | `{first}`")), None)
        assert line is not None, f"docs/checkpoints.md has no row for {width}-d features ({first})"
        assert all(other in line for other in others), (width, others)
