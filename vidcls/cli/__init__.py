"""The ``vidcls`` command-line program.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Only the chosen subcommand's module is imported, so ``vidcls --help`` and ``vidcls classify``
start fast and need no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name → (module, one-line help). The CLI is the only place that ties the packages together.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("vidcls.training.synth", "make labeled synthetic videos in OUT/{train,val,test}/<class>/"),
    "extract": ("vidcls.training.extract", "Stage 1: videos → per-frame multi-scale features (HDF5)"),
    "train": ("vidcls.training.train", "Stage 2: train one model or an ensemble on feature files"),
    "evaluate": ("vidcls.training.evaluate", "metrics (standard, TTA, ensemble) + confusion matrix PNG"),
    "import-checkpoint": ("vidcls.training.import_checkpoint", "convert reference-project .pt checkpoints"),
    "export": ("vidcls.export.repository", "fill a Triton model repository (--target gpu|cpu)"),
    "serve": ("vidcls.launcher", "start a local tritonserver on a model repository"),
    "classify": ("vidcls.client.classify", "classify videos over gRPC to CSV/JSONL"),
    "bench": ("vidcls.client.bench", "perf_analyzer sweep → CSV, PNG plots, markdown summary"),
    "report": ("vidcls.client.report", "one self-contained HTML page of a classify output (thumbnails at the evidence)"),
    "demo": ("vidcls.cli.demo", "the whole path on synthetic data on this machine's CPU"),
}


def _top_parser() -> argparse.ArgumentParser:
    from vidcls import __version__

    parser = argparse.ArgumentParser(
        prog="vidcls",
        description="Video-content classification served by NVIDIA Triton Inference Server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<18} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\nRun 'vidcls COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"vidcls {__version__}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv or ["--help"])
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}")
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"vidcls {name}", description=help_text,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
