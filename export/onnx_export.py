"""ONNX export of the frame backbone and the temporal models, with a parity check by default.

Exporter choice (checked on torch 2.14.1 / onnxscript 0.7 / ONNX Runtime 1.32, see
tests/test_onnx_export.py):

- The TorchScript exporter bakes the sequence length into ``nn.MultiheadAttention``'s reshapes
  (exported at L=73, the graph fails at L=36).
- The dynamo exporter with ``dynamic_shapes`` is no better here: it specializes the length while
  tracing the LSTM and bakes it into the attention reshapes, even into an explicit
  ``reshape(b, -1, heads, head_dim)``; a graph exported at L=9 fails at 5 and 50 and, worse,
  passes at 18 and 27 (multiples of 9) by accident.
- What works: the TorchScript exporter on :class:`ExportableTemporal`, which computes the same
  function as ``SoftmaxHead(SuperEnhancedTemporalModel)`` on unpadded sequences with the same
  parameters, but writes self-attention as explicit matmuls whose reshapes take the batch size
  from the input's shape and leave the length as -1. The LSTM goes out as ONNX ``LSTM`` nodes
  (one bidirectional node per layer), which ONNX Runtime runs with its fused kernel.

The parity check (``vidcls.export.parity``) compares the graph with the ORIGINAL module (not the
re-expression) at every served length, so it also proves the re-expression equivalent.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from vidcls.config import VidclsConfig
from vidcls.export import parity
from vidcls.models.backbone import FrameBackbone
from vidcls.models.temporal import SuperEnhancedTemporalModel


# 17: first opset with LayerNormalization (one fused node instead of ~10 primitive ones);
# supported by ONNX Runtime >= 1.14 and TensorRT >= 8.6.
DEFAULT_OPSET = 17


class ExportableTemporal(nn.Module):
    """``softmax(model(x))`` and the attention-pooling weights for unpadded [B, L, D] sequences,
    written for a length-free graph.

    Shares (does not copy) the parameters of ``model``. Eval-mode only: dropout is identity.
    """

    def __init__(self, model: SuperEnhancedTemporalModel):
        super().__init__()
        attn = model.attention
        if attn.in_proj_weight is None or not attn.batch_first:
            raise ValueError("ExportableTemporal expects a batch_first MultiheadAttention with a packed in_proj")
        self.model = model

    def _self_attention(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.model.attention
        batch, embed = x.shape[0], x.shape[2]
        heads = attn.num_heads
        head_dim = embed // heads
        q, k, v = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        # [B, L, E] -> [B, heads, L, head_dim]; L stays -1 so no length is recorded in the graph.
        q, k, v = (t.reshape(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        scores = torch.matmul(q * head_dim ** -0.5, k.transpose(-2, -1))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return attn.out_proj(out.transpose(1, 2).reshape(batch, -1, embed))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (probabilities [B, C], attention-pooling weights [B, L])."""
        m = self.model
        lstm_out, _ = m.lstm(m.input_projection(x))
        seq = m.attention_norm(lstm_out + self._self_attention(lstm_out))
        weights = torch.softmax(m.attention_pooling(seq).squeeze(-1), dim=1)
        pooled = (weights.unsqueeze(-1) * seq).sum(dim=1)
        return torch.softmax(m.classifier(pooled), dim=-1), weights


def export_temporal_onnx(model: SuperEnhancedTemporalModel, config: VidclsConfig, path: str | os.PathLike,
                         opset: int | None = None, check: bool = True) -> Path:
    """Export ``model`` as ``config.serving.sequence`` float32 [B, L, D] → ``config.serving.probs`` [B, C]
    and ``config.serving.attention`` [B, L] (the attention-pooling weights: the evidence).

    B and L are dynamic. With ``check`` (default) the graph is compared with PyTorch in ONNX
    Runtime at every length serving uses plus a few others (batch 1 and 3); on failure the file is
    not written and :class:`~vidcls.export.parity.ParityError` is raised. The report is logged.
    """
    cpu_model = _cpu_eval_copy(model)
    wrapper = ExportableTemporal(cpu_model).eval()
    example = torch.zeros(2, config.seq_len, config.feature_dim)
    s = config.serving
    path = Path(path)

    def write(tmp: Path) -> None:
        _torchscript_export(wrapper, example, tmp, [s.sequence], [s.probs, s.attention],
                            {s.sequence: {0: "batch", 1: "length"}, s.probs: {0: "batch"},
                             s.attention: {0: "batch", 1: "length"}},
                            opset or DEFAULT_OPSET)

    def check_fn(tmp: Path):
        return parity.check_temporal(cpu_model, tmp, config)

    return parity.write_checked(path, write, check_fn if check else None)


def export_backbone_onnx(backbone: FrameBackbone, config: VidclsConfig, path: str | os.PathLike,
                         opset: int | None = None, check: bool = True) -> Path:
    """Export ``backbone`` as ``config.serving.frames`` uint8 [N, S, S, 3] → ``config.serving.features`` [N, D].

    N is dynamic, S = ``config.frame_size``. /255 and the ImageNet mean/std are inside the graph,
    so decoded frames go in as they are. ``check`` compares with PyTorch at 1 and 4 frames.
    """
    cpu_backbone = _cpu_eval_copy(backbone)
    size = config.frame_size
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    s = config.serving
    path = Path(path)

    def write(tmp: Path) -> None:
        _torchscript_export(cpu_backbone, example, tmp, [s.frames], [s.features],
                            {s.frames: {0: "frames"}, s.features: {0: "frames"}}, opset or DEFAULT_OPSET)

    def check_fn(tmp: Path):
        return parity.check_backbone(cpu_backbone, tmp, config)

    return parity.write_checked(path, write, check_fn if check else None)


def _cpu_eval_copy(module: nn.Module) -> nn.Module:
    """Export always traces on the CPU in float32; the caller's module (maybe on a GPU) is untouched."""
    if all(p.device.type == "cpu" and p.dtype == torch.float32 for p in module.parameters()):
        return module.eval()
    return copy.deepcopy(module).to("cpu", torch.float32).eval()


def _torchscript_export(module: nn.Module, example: torch.Tensor, path: Path, inputs: list[str],
                        outputs: list[str], dynamic_axes: dict, opset: int) -> None:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # The TorchScript exporter's deprecation notice and LSTM/batch_first tracer warnings are
        # expected here; the parity check is what tells a good graph from a bad one.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic_axes, opset_version=opset,
                          do_constant_folding=True)
    import onnx

    onnx.checker.check_model(str(path))
