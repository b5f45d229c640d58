"""The ``vidcls`` command-line program.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Only the chosen subcommand's module is imported, so ``vidcls --help`` and ``vidcls classify``
start fast and need no torch.

Errors reach the user as one line on stderr and an exit code, never as a traceback: 2 for a usage
error (a wrong option, a path that does not exist, a missing install), 1 for work that failed
(:mod:`vidcls.errors`). ``VIDCLS_DEBUG=1`` lets exceptions through with their tracebacks.

A subcommand that wraps another program (``serve`` → tritonserver) declares
``parser.set_defaults(passthrough=[])``; whatever follows ``--`` on its command line lands there
untouched, and everything before ``--`` is vidcls's own options, in any order.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from vidcls.errors import EXIT_FAILED, UsageError, VidclsError

# name → (module, one-line help, the pip extra it needs). The CLI is the only place that ties the
# packages together.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": ("vidcls.training.synth", "make labeled synthetic videos in OUT/{train,val,test}/<class>/", "train"),
    "extract": ("vidcls.training.extract_command", "Stage 1: videos → per-frame multi-scale features (HDF5)", "train"),
    "train": ("vidcls.training.train", "Stage 2: train one model or an ensemble on feature files", "train"),
    "evaluate": ("vidcls.training.evaluate", "metrics (standard, TTA, ensemble) + confusion matrix PNG", "train"),
    "import-checkpoint": ("vidcls.training.import_checkpoint", "convert reference-project .pt checkpoints", "train"),
    "export": ("vidcls.export.repository", "fill a Triton model repository (--target gpu|cpu)", "export"),
    "serve": ("vidcls.launcher", "start a local tritonserver on a model repository", "serve"),
    "classify": ("vidcls.client.classify", "classify videos over gRPC to CSV/JSONL", "client"),
    "bench": ("vidcls.client.bench", "perf_analyzer sweep → CSV, PNG plots, markdown summary", "client"),
    "config": ("vidcls.cli.config_cmd", "print a config (JSON) to start your own from (classes, backbone, ...)", ""),
    "report": ("vidcls.client.report", "one self-contained HTML page of a classify output (thumbnails at the evidence)",
               "client"),
    "demo": ("vidcls.cli.demo", "the whole path on synthetic data on this machine's CPU", "train,export,serve,client"),
}

# Which pip extra brings a third-party module (for the one-line install hint).
EXTRA_OF_MODULE = {
    "torch": "train", "torchvision": "train", "h5py": "train", "safetensors": "train", "matplotlib": "client",
    "onnx": "export", "onnxruntime": "export", "onnxscript": "export", "google": "export",
    "tritonclient": "client", "grpc": "client", "pytriton": "serve", "nvidia": "dali", "ray": "ray",
    "tensorrt": "gpu",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` once, and only when there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default in (None, False, "", [], argparse.SUPPRESS) or "default" in text.lower()
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is a :class:`UsageError` (one line) instead of usage text."""

    def error(self, message: str):  # type: ignore[override]
        if message.startswith("unrecognized arguments") and self.get_default("passthrough") is not None:
            message += f"; {getattr(self, 'passthrough_to', 'the wrapped program')}'s own options go after '--'"
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _top_parser() -> argparse.ArgumentParser:
    from vidcls import __version__

    parser = Parser(
        prog="vidcls",
        description="Video-content classification served by NVIDIA Triton Inference Server.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<18} {h}" for n, (_, h, _) in COMMANDS.items())
        + "\n\nRun 'vidcls COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"vidcls {__version__}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands below")
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (tests and the demo swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def configure_logging(verbose: bool = False) -> None:
    """The library reports through the ``vidcls`` loggers (progress at INFO, per-item detail at
    DEBUG) and never prints; the program shows those records on stderr as plain lines, DEBUG too
    with a command's ``--verbose``. Results go to stdout from each command's ``run``."""
    logger = logging.getLogger("vidcls")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_LineFormatter("%(message)s"))
        logger.addHandler(handler)


def command_parser(name: str, module) -> argparse.ArgumentParser:
    """The argument parser of subcommand ``name`` (its module already imported)."""
    parser = Parser(prog=f"vidcls {name}", description=COMMANDS[name][1], formatter_class=HelpFormatter)
    module.add_arguments(parser)
    return parser


def _missing_module(name: str, exc: ModuleNotFoundError) -> UsageError:
    missing = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(missing) or COMMANDS[name][2] or "all"
    return UsageError(f"vidcls {name} needs the Python package {missing!r}, which is not installed here: "
                      f"pip install 'vidcls[{extra}]'")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _run(name: str, rest: list[str]) -> int:
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        raise _missing_module(name, exc) from exc
    parser = command_parser(name, module)
    passthrough: list[str] = []
    if parser.get_default("passthrough") is not None and "--" in rest:
        cut = rest.index("--")
        rest, passthrough = rest[:cut], rest[cut + 1:]
    args = parser.parse_args(rest)
    configure_logging(verbose=bool(getattr(args, "verbose", False)))
    if passthrough:
        args.passthrough = passthrough
    try:
        return int(module.run(args) or 0)
    except ModuleNotFoundError as exc:  # a lazy import inside the command
        raise _missing_module(name, exc) from exc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("VIDCLS_DEBUG"))
    try:
        if not argv or argv[0].startswith("-"):
            _top_parser().parse_args(argv or ["--help"])
            return 0
        if argv[0] not in COMMANDS:
            raise UsageError(f"unknown command {argv[0]!r}; the commands are: {', '.join(COMMANDS)}")
        return _run(argv[0], argv[1:])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except VidclsError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, ValueError) as exc:
        # Not a known user error, but one line still says more to a user than a traceback; the
        # work failed (exit 1). VIDCLS_DEBUG=1 shows where.
        if debug:
            raise
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
