"""``vidcls demo``: the whole product path on synthetic data, on this machine's CPU, in minutes.

synth → extract (tiny CNN, random weights) → train a small ensemble → evaluate → export a cpu
Triton repository → start a real tritonserver → classify the held-out videos over gRPC →
print predictions vs. true classes with the accuracy → stop the server → an HTML report of the
run with the evidence behind each answer.

Each step runs the same code as its ``vidcls`` subcommand (called through the CLI, so the demo
exercises exactly what a user types) and is skipped or resumed when its output already exists,
so re-running the demo reuses what is built.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from vidcls.arguments import positive_int
from vidcls.config import VidclsConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="working folder (reused on re-runs)")
    parser.add_argument("--per-class", type=positive_int, default=12, help="training videos per class")
    parser.add_argument("--test-per-class", type=positive_int, default=5, help="held-out videos per class")
    parser.add_argument("--models", type=positive_int, default=None, help="ensemble size (default: the demo config's 2)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="max training epochs (default: the demo config's)")
    parser.add_argument("--concurrency", type=positive_int, default=4, help="gRPC requests in flight while classifying")
    parser.add_argument("--fresh", action="store_true", help="delete the working folder first")


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(start: float, timings: dict, name: str) -> None:
    timings[name] = time.perf_counter() - start
    print(f"   done in {timings[name]:.1f} s", flush=True)


def _cli(*argv: str) -> None:
    from vidcls.cli import main

    code = main([str(a) for a in argv])
    if code:
        raise SystemExit(f"'vidcls {' '.join(map(str, argv))}' failed with exit code {code}")


def run(args: argparse.Namespace) -> int:
    import shutil

    out: Path = args.out.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    data, feats, ckpts, repo = out / "data", out / "features", out / "checkpoints", out / "repository"
    config_file = out / "vidcls_config.json"
    VidclsConfig.demo().save(config_file)
    timings: dict[str, float] = {}

    t = _step("1/6 synthesize labeled videos (H.264, VP9, MPEG-4; 4 classes)")
    val = max(2, args.per_class // 3)
    _cli("synth", data, "--per-class", args.per_class, "--val-per-class", val, "--test-per-class", args.test_per_class)
    _done(t, timings, "synth")

    t = _step("2/6 extract features (64 frames, 256x256, tiny CNN backbone run once per video)")
    _cli("extract", data, feats, "--config", config_file)
    _done(t, timings, "extract")

    t = _step("3/6 train the temporal-model ensemble (resumes if interrupted)")
    # One torch thread: the demo's small models gain nothing from intra-op threads on 2 cores.
    train_args = ["train", feats, ckpts, "--threads", "1"]
    if args.models:
        train_args += ["--models", args.models]
    if args.epochs:
        train_args += ["--epochs", args.epochs]
    _cli(*train_args)
    _cli("evaluate", feats, ckpts, "--split", "test", "--out", out / "evaluation")
    _done(t, timings, "train")

    t = _step("4/6 export a cpu Triton repository (ONNX, parity-checked against PyTorch)")
    _export(ckpts, repo)
    _done(t, timings, "export")

    from vidcls.launcher import TritonServer

    t = _step("5/6 start tritonserver and classify the held-out videos over gRPC")
    predictions = out / "predictions.csv"
    predictions.unlink(missing_ok=True)  # a new server, a new run: classify everything again
    with TritonServer(repo, log_path=out / "tritonserver.log") as server:
        print(f"   tritonserver ready: gRPC {server.grpc_url}, HTTP {server.http_url}", flush=True)
        from vidcls.cli import main

        # exit code 1 only means some file failed; the table below shows which.
        main(["classify", str(data / "test"), "--url", server.grpc_url, "--output", str(predictions),
              "--concurrency", str(args.concurrency), "--evidence", "3", "--quiet"])
    _done(t, timings, "serve+classify")

    _step("6/6 predictions vs. true classes")
    accuracy = print_table(predictions, data / "test")
    report = out / "report.html"
    _cli("report", predictions, "-o", report, "--title", "vidcls demo: held-out synthetic videos", "--no-progress")
    summary = {"accuracy": accuracy, "seconds": {k: round(v, 1) for k, v in timings.items()},
               "predictions": str(predictions), "evaluation": str(out / "evaluation"), "report": str(report)}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nsummary: {out / 'demo_summary.json'}; confusion matrices: {out / 'evaluation'}; "
          f"report (open in a browser): {report}")
    return 0


def _export(ckpts: Path, repo: Path) -> None:
    """Export unless the repository is newer than every checkpoint (re-runs reuse it)."""
    newest_ckpt = max(p.stat().st_mtime for p in ckpts.rglob("model.safetensors"))
    marker = repo / ".vidcls_export_done"
    if marker.exists() and marker.stat().st_mtime >= newest_ckpt:
        print("   repository is up to date; reusing it")
        return
    _cli("export", ckpts, repo, "--target", "cpu")
    marker.touch()


def print_table(predictions: Path, test_dir: Path) -> float:
    """Print path, true class, predicted class and confidence; return the accuracy."""
    config = VidclsConfig.demo()
    rows = list(csv.DictReader(predictions.open()))
    correct = total = 0
    print(f"{'video':<44} {'true':<16} {'predicted':<16} {'p':>5}")
    for row in sorted(rows, key=lambda r: r["path"]):
        path = Path(row["path"])
        true = path.parent.name
        if row.get("error"):
            print(f"{path.name:<44} {true:<16} {'ERROR: ' + row['error'][:40]}")
            total += 1
            continue
        pred = row["class"]
        prob = max(float(row[c]) for c in config.classes if c in row)
        ok = pred.replace(" ", "_") == true  # the server may answer with display names
        correct += ok
        total += 1
        print(f"{path.name:<44} {true:<16} {pred:<16} {prob:5.2f} {'' if ok else '✗'}")
    accuracy = correct / total if total else 0.0
    print(f"\naccuracy on {total} held-out videos: {accuracy:.1%} ({correct}/{total}; chance = 25%)")
    return accuracy
