"""What the evidence outputs cost: the same videos through a repository without them, one with
them that is not asked for them, and one asked for them.

    .venv/bin/python benchmarks/bench_evidence.py [--config tiny|demo|default] [--videos 8] [--rounds 3]

Two cpu repositories of the same checkpoints (``config.serving.evidence`` off and on), both
servers up at once (an idle Triton costs nothing), the three variants measured in turn, round
after round, so drifts of a shared machine hit them alike; the median videos/s of each variant
and its ratio to the repository without evidence, plus Triton's compute time per execution of the
steps that changed (temporal models: a second output; ensemble_average: the frame mapping; the
probe: the time stamps). The tiny config is the worst case for the relative cost: its models are
cheapest, so the fixed cost per request weighs most. Not a test: compare figures of one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_serving import make_checkpoints, make_videos, model_compute, run_load

from vidcls.config import VidclsConfig

PRESETS = {"tiny": lambda: VidclsConfig.tiny(num_models=2), "demo": VidclsConfig.demo, "default": VidclsConfig}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--work", default="runs/bench_evidence")
    args = parser.parse_args(argv)

    from vidcls.client.evidence import output_names
    from vidcls.export.repository import build_repository
    from vidcls.launcher import TritonServer

    base = PRESETS[args.config]()
    work = Path(args.work) / args.config
    checkpoints = make_checkpoints(base, work / "checkpoints")
    configs = {flag: base.replace(serving=dataclasses.replace(base.serving, evidence=flag)) for flag in (False, True)}
    repos = {flag: build_repository(checkpoints, work / f"repo_evidence_{'on' if flag else 'off'}", target="cpu",
                                    config=configs[flag]) for flag in (False, True)}
    videos = make_videos(work / "videos", args.videos, seconds=args.seconds)
    payloads = [(p.name, np.frombuffer(p.read_bytes(), np.uint8)[None]) for p in videos]
    s = base.serving
    plain = [s.probabilities, s.class_name]
    with TritonServer(repos[False], log_path=work / "off.log") as off, \
            TritonServer(repos[True], log_path=work / "on.log") as on:
        variants = {"no evidence outputs": (off.grpc_url, plain),
                    "evidence outputs, not asked": (on.grpc_url, plain),
                    "evidence outputs, asked": (on.grpc_url, plain + list(output_names(base)))}
        for url, outputs in variants.values():
            run_load(url, base, payloads[:2], 1, outputs)  # warm the python stubs
        rates: dict[tuple[str, int], list[float]] = {}
        for r in range(args.rounds):
            for c in args.concurrency:
                for name, (url, outputs) in variants.items():
                    res = run_load(url, base, payloads, c, outputs)
                    if res["errors"]:
                        print(f"errors in {name}: {res['errors'][:3]}")
                        return 1
                    rates.setdefault((name, c), []).append(res["videos_per_s"])
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        compute = {"off": model_compute(off), "on": model_compute(on)}

    print(f"\nconfig {args.config}: {args.videos} clips of {args.seconds:g} s (320x240), {args.rounds} rounds, "
          f"median videos/s")
    print(f"{'variant':<30} " + " ".join(f"{'c=' + str(c):>14}" for c in args.concurrency))
    for name in variants:
        cells = []
        for c in args.concurrency:
            med = statistics.median(rates[(name, c)])
            ref = statistics.median(rates[("no evidence outputs", c)])
            cells.append(f"{med:>7.2f} ({med / ref:4.2f}x)")
        print(f"{name:<30} " + " ".join(f"{x:>14}" for x in cells))
    print(f"\n{'compute ms per execution':<26} {'off':>8} {'on':>8}")
    for model in sorted(set(compute["off"]) & set(compute["on"])):
        if model == s.ensemble:
            continue
        print(f"{model:<26} {compute['off'][model][2]:>8.2f} {compute['on'][model][2]:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
