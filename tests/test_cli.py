"""The command line as a user meets it: every subcommand given bad arguments answers with one line
(``error: ...``, naming the problem and the fix) and the exit code of its kind — 2 for a usage
error (a wrong option or value, a path that does not exist, a missing install), 1 for work that
failed — and never a traceback. ``--help`` states each default once and explains every option.

The table runs in-process through ``vidcls.cli.main`` (what the ``vidcls`` script calls), so an
exception that escaped would fail the test; two cases run the real program in a subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from vidcls.cli import COMMANDS, HelpFormatter, command_parser
from vidcls.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def places(tmp_path_factory, h264_video, tiny_checkpoints):
    """Paths the table refers to as {name}."""
    from vidcls.launcher import free_port

    dead_url = f"127.0.0.1:{free_port()}"  # nothing listens there
    root = tmp_path_factory.mktemp("cli_errors")
    empty = root / "empty"
    empty.mkdir()
    flat = root / "flat"  # class folders without split folders
    for name in ("animation", "Gaming"):
        (flat / name).mkdir(parents=True)
        (flat / name / "a.mp4").write_bytes(h264_video.read_bytes())
    bad_json = root / "bad.json"
    bad_json.write_text('{"classes": ["A", "B"], "num_frame": 3}\n')
    garbage_h5 = root / "test_features_multiscale.h5"
    garbage_h5.write_text("not an HDF5 file\n")
    return {"empty": empty, "flat": flat, "bad_json": bad_json, "garbage_h5": garbage_h5, "video": h264_video,
            "ckpts": tiny_checkpoints, "dead": dead_url, "out": root / "out", "missing": root / "missing"}


# (argv, exit code, a piece of the message)
CASES = [
    (["bogus"], 2, "unknown command 'bogus'; the commands are: synth"),
    (["synth"], 2, "the following arguments are required: out"),
    (["synth", "{out}", "--per-class", "-1"], 2, "argument --per-class: must be at least 0"),
    (["synth", "{out}", "--per-class", "0", "--val-per-class", "0", "--test-per-class", "0"], 2, "nothing to make"),
    (["synth", "{out}", "--workers", "two"], 2, "argument --workers: expected a whole number, got 'two'"),
    (["extract", "{missing}", "{out}"], 2, "argument data: {missing} does not exist"),
    (["extract", "{flat}", "{out}"], 2, "holds class folders (Gaming, animation) but no split folders"),
    (["extract", "{empty}", "{out}", "--preset", "demo"], 2, "no videos found in {empty}: expected"),
    (["extract", "{flat}", "{out}", "--config", "{bad_json}"], 2, "is not a valid vidcls config: unknown"),
    (["extract", "{flat}", "{out}", "--backbone", "vgg16"], 2, "argument --backbone: invalid choice: 'vgg16'"),
    (["train", "{missing}", "{out}"], 2, "argument features: {missing} does not exist"),
    (["train", "{empty}", "{out}"], 2, "missing feature file {empty}/train_features_multiscale.h5: make it with"),
    (["train", "{empty}", "{out}", "--lr", "fast"], 2, "argument --lr: invalid float value: 'fast'"),
    (["train", "{empty}", "{out}", "--epochs", "0"], 2, "argument --epochs: must be at least 1"),
    (["evaluate", "{missing}", "{ckpts}"], 2, "argument features: {missing} does not exist"),
    (["evaluate", "{empty}", "{ckpts}"], 2, "no test feature file {empty}/test_features_multiscale.h5"),
    (["evaluate", "{garbage_h5}", "{empty}"], 2, "no checkpoints (model.safetensors) in {empty}"),
    (["evaluate", "{garbage_h5}", "{ckpts}"], 1, "file signature not found"),
    (["import-checkpoint", "{missing}.pt", "--out", "{out}"], 2, "argument files: {missing}.pt does not exist"),
    (["import-checkpoint", "{video}"], 2, "the following arguments are required: --out"),
    (["export", "{missing}", "{out}", "--target", "cpu"], 2, "checkpoint folder {missing} does not exist"),
    (["export", "{out}"], 2, "give CHECKPOINTS... REPO"),
    (["export", "{empty}", "{out}", "--target", "cpu"], 2, "no checkpoints (model.safetensors) in {empty}"),
    (["export", "{ckpts}", "{out}", "--target", "tpu"], 2, "argument --target: invalid choice: 'tpu'"),
    (["serve"], 2, "the following arguments are required: repo"),
    (["serve", "{empty}"], 1, "{empty} is not a model repository"),
    (["classify", "{missing}.mp4"], 2, "{missing}.mp4 does not exist"),
    (["classify", "{video}", "--url", "foo:bar"], 2, "--url 'foo:bar': the port must be a number"),
    (["classify", "{video}", "--url", "http://127.0.0.1:8001"], 2, "without a scheme or path"),
    (["classify", "{video}", "--concurrency", "0"], 2, "--concurrency must be at least 1"),
    (["classify", "{video}", "--root-cert", "{missing}.pem"], 2, "TLS file {missing}.pem does not exist"),
    (["classify", "{empty}", "--url", "{dead}"], 2, "no video files in {empty}"),
    (["classify", "{video}", "--url", "{dead}", "--no-progress"], 1, "no Triton server answers at {dead}"),
    (["bench", "{missing}"], 2, "argument VIDEO: {missing} does not exist"),
    (["bench", "{video}", "--url", "localhost"], 2, "'localhost' is not HOST:PORT"),
    (["bench", "{video}", "--url", "{dead}", "-o", "{out}"], 1, "no Triton server answers at {dead}"),
    (["config", "--classes", "Cats"], 2, "a class set needs at least two distinct names"),
    (["config", "--classes", "cat", "Cat"], 2, "differ only in case"),
    (["config", "--from", "{missing}.json"], 2, "argument --from: {missing}.json does not exist"),
    (["demo", "--per-class", "-3"], 2, "argument --per-class: must be at least 1"),
]


@pytest.mark.parametrize("argv, code, message", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_arguments_give_one_line_and_an_exit_code(argv, code, message, places, capfd):
    def fill(text: str) -> str:
        return text.format(**places)

    rc = cli_main([fill(a) for a in argv])
    captured = capfd.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and fill(message) in lines[0], lines[0]
    assert rc == code, lines[0]


def test_the_program_itself_prints_no_traceback(tmp_path):
    """The `vidcls` program (not main() in-process): a nonexistent data folder, before any model is
    built or any weights downloaded."""
    proc = subprocess.run([sys.executable, "-m", "vidcls.cli", "extract", str(tmp_path / "nope"), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: argument data: {tmp_path / 'nope'} does not exist (see 'vidcls extract --help')"


def test_a_missing_install_names_the_extra_to_install(tmp_path):
    """`vidcls train` where torch is not installed (a client-only install, simulated by making
    `import torch` fail): the pip command, not a ModuleNotFoundError."""
    code = ("import sys; sys.modules['torch'] = None; from vidcls.cli import main; "
            f"sys.exit(main(['train', {str(tmp_path)!r}, {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("error: vidcls train needs the Python package 'torch', which is not installed "
                                   "here: pip install 'vidcls[train]'")


def test_debug_shows_the_traceback(tmp_path):
    env_code = ("import os, sys; os.environ['VIDCLS_DEBUG'] = '1'; from vidcls.cli import main; "
                f"sys.exit(main(['train', {str(tmp_path)!r}, {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "UsageError" in proc.stderr


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_explains_every_option_and_states_defaults_once(name):
    parser = command_parser(name, importlib.import_module(COMMANDS[name][0]))
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    formatter = HelpFormatter(parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"vidcls {name} {'/'.join(action.option_strings) or action.dest} has no help"
        shown = formatter._expand_help(action)  # the text --help prints for this option
        assert shown.count("(default") <= 1, f"vidcls {name} {action.option_strings}: {shown}"
