"""What an LSTM computed in FP16 would cost in accuracy: an estimate on the CPU, to decide whether
the gpu target's FP16 graphs may move the LSTM out of ``serving.fp16_fp32_ops``.

The FP16 graphs keep the LSTM in FP32 (its cell state carries rounding from step to step), and
vidcls.export.fp16's emulation rounds node outputs only, so it cannot say what an FP16 LSTM node
would do inside. This script runs the production-size temporal model (random init) with its
BiLSTM replaced by a step-by-step FP16 emulation (weights, input projection, every gate, the cell
and hidden state rounded to FP16 at each step, FP32 arithmetic in between, as GPU kernels that
accumulate in FP32 do) and everything else in FP32, and prints the largest probability difference
from the FP32 model at the served view lengths. How cuDNN or TensorRT order the FP16 operations
inside their LSTM kernels may differ: the GPU run (benchmarks/gpu_bench.py) is what decides.

    .venv/bin/python benchmarks/bench_fp16_lstm.py [--batch 8] [--seed 42]
    .venv/bin/python benchmarks/bench_fp16_lstm.py --smoke    # the tiny temporal model: the script runs (make test)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from vidcls.config import VidclsConfig
from vidcls.export.onnx_export import ExportableTemporal
from vidcls.models.temporal import SuperEnhancedTemporalModel


def half(t: torch.Tensor) -> torch.Tensor:
    return t.half().float()


class HalfLSTM(nn.Module):
    """``lstm``'s function (batch first, eval) with FP16 storage at every step."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        lstm, out = self.lstm, half(x)
        dirs = 2 if lstm.bidirectional else 1
        for layer in range(lstm.num_layers):
            outputs = []
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = half(getattr(lstm, "weight_ih" + sfx)), half(getattr(lstm, "weight_hh" + sfx))
                b_ih, b_hh = half(getattr(lstm, "bias_ih" + sfx)), half(getattr(lstm, "bias_hh" + sfx))
                seq = out.flip(1) if d else out
                gx = half(seq @ w_ih.T + b_ih)  # the input gates of every step: one GEMM, as the kernels do
                h = torch.zeros(seq.shape[0], lstm.hidden_size)
                c = torch.zeros_like(h)
                steps = []
                for t in range(seq.shape[1]):
                    g = half(gx[:, t] + half(h @ w_hh.T + b_hh))
                    i, f, gg, o = g.chunk(4, dim=-1)
                    i, f, o = half(torch.sigmoid(i)), half(torch.sigmoid(f)), half(torch.sigmoid(o))
                    gg = half(torch.tanh(gg))
                    c = half(half(f * c) + half(i * gg))
                    h = half(o * half(torch.tanh(c)))
                    steps.append(h)
                y = torch.stack(steps, 1)
                outputs.append(y.flip(1) if d else y)
            out = torch.cat(outputs, -1)
        return out, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true",
                        help="the tiny temporal model (VidclsConfig.tiny), batch 2: checks that the script runs")
    args = parser.parse_args(argv)
    config = VidclsConfig.tiny() if args.smoke else VidclsConfig()
    if args.smoke:
        args.batch = min(args.batch, 2)
    torch.manual_seed(args.seed)
    model = SuperEnhancedTemporalModel(config.temporal).eval()
    full = ExportableTemporal(model).eval()
    rng = np.random.default_rng(0)
    worst = 0.0
    with torch.inference_mode():
        for length in sorted(set(config.view_lengths.values())):
            x = torch.from_numpy(np.abs(rng.standard_normal((args.batch, length, config.feature_dim))).astype(np.float32))
            want, _ = full(x)
            lstm = model.lstm
            model.lstm = HalfLSTM(lstm)
            try:
                got, _ = full(x)
            finally:
                model.lstm = lstm
            diff = float((got - want).abs().max())
            same = int((got.argmax(-1) == want.argmax(-1)).sum())
            worst = max(worst, diff)
            print(f"L={length:4d} batch {args.batch}: max |dp| {diff:.3g}, same class {same}/{args.batch}", flush=True)
    print(f"worst {worst:.3g} (GPU tolerance 1e-2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
