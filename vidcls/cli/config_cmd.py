"""``vidcls config``: print a config (JSON) to start your own from.

Every number, name and limit of vidcls is a field of :class:`vidcls.config.VidclsConfig`. This
command prints one (a preset, optionally with your class names or another backbone) so that it can
be edited and handed to ``vidcls extract --config FILE``; feature files, checkpoints and model
repositories then carry it on. Unknown keys in an edited file are refused when it is loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidcls.arguments import config_file
from vidcls.config import BACKBONE_DIMS, PRESETS, VidclsConfig
from vidcls.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="starting point: default = the production model, tiny = tests, "
                             "demo = 64 frames of 256x256 with a tiny CNN")
    parser.add_argument("--from", dest="from_file", type=config_file, default=None, metavar="FILE",
                        help="start from this config JSON instead (e.g. a repository's vidcls_config.json)")
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                        help="your class names, in label order (the class folders of your data use them)")
    parser.add_argument("--backbone", choices=sorted(BACKBONE_DIMS), default=None,
                        help="another frame backbone (the feature width follows)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="write the JSON to this file instead of printing it")


def build(args: argparse.Namespace) -> VidclsConfig:
    config = VidclsConfig.load(args.from_file) if args.from_file else PRESETS[args.preset]()
    try:
        if args.backbone:
            config = VidclsConfig.for_backbone(args.backbone, **{
                k: v for k, v in vars(config).items() if k not in ("backbone",)})
        if args.classes:
            config = config.with_classes(args.classes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return config


def run(args: argparse.Namespace) -> int:
    text = build(args).to_json() + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
