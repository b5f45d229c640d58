"""SuperEnhancedTemporalModel (docs/design.md): BiLSTM + self-attention + attention pooling.

Parameter names match the reference project so its checkpoints load unchanged. Unlike the
reference, padding is masked (packed LSTM, key_padding_mask, masked pooling softmax) when
``lengths`` is given; on an unpadded sequence (``lengths=None``) the output is identical to the
reference, which is how serving always calls it (every TTA view runs at its own length).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from vidcls.config import TemporalConfig


class SuperEnhancedTemporalModel(nn.Module):
    def __init__(self, config: TemporalConfig | None = None, **kwargs):
        super().__init__()
        config = config or TemporalConfig(**kwargs)
        self.config = config
        d, h, c, p = config.feature_dim, config.hidden_dim, config.num_classes, config.dropout
        out = h * (2 if config.bidirectional else 1)
        self.input_projection = nn.Sequential(nn.Linear(d, h), nn.LayerNorm(h), nn.ReLU(), nn.Dropout(p * 0.5))
        self.lstm = nn.LSTM(h, h, num_layers=config.num_lstm_layers, batch_first=True,
                            dropout=p if config.num_lstm_layers > 1 else 0.0,
                            bidirectional=config.bidirectional)
        self.attention = nn.MultiheadAttention(out, config.num_attention_heads, dropout=p, batch_first=True)
        self.attention_dropout = nn.Dropout(p)
        self.attention_norm = nn.LayerNorm(out)
        self.attention_pooling = nn.Sequential(
            nn.Linear(out, h), nn.LayerNorm(h), nn.Tanh(), nn.Dropout(p * 0.5), nn.Linear(h, 1))
        self.classifier = nn.Sequential(
            nn.Linear(out, 768), nn.LayerNorm(768), nn.ReLU(), nn.Dropout(p),
            nn.Linear(768, 512), nn.LayerNorm(512), nn.ReLU(), nn.Dropout(p),
            nn.Linear(512, 256), nn.LayerNorm(256), nn.ReLU(), nn.Dropout(p * 0.5),
            nn.Linear(256, c))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                return_attention: bool = False):
        """[B, L, D] features (zero-padded past ``lengths``) → [B, C] logits; with
        ``return_attention`` also the attention-pooling weights [B, L] (softmax over time, 0 on
        padding): how much each row of the sequence counted in the pooled vector (the evidence)."""
        b, seq_len, _ = x.shape
        x = self.input_projection(x)
        pad_mask = None
        if lengths is not None and bool((lengths < seq_len).any()):
            pad_mask = torch.arange(seq_len, device=x.device)[None, :] >= lengths.to(x.device)[:, None]
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            lstm_out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=seq_len)
        else:
            lstm_out, _ = self.lstm(x)
        attended, _ = self.attention(lstm_out, lstm_out, lstm_out, key_padding_mask=pad_mask, need_weights=False)
        seq = self.attention_norm(lstm_out + self.attention_dropout(attended))
        scores = self.attention_pooling(seq).squeeze(-1)
        if pad_mask is not None:
            scores = scores.masked_fill(pad_mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        pooled = (weights.unsqueeze(-1) * seq).sum(dim=1)
        logits = self.classifier(pooled)
        return (logits, weights) if return_attention else logits


class SoftmaxHead(nn.Module):
    """Temporal model + softmax: what each served temporal_i computes per TTA view."""

    def __init__(self, model: SuperEnhancedTemporalModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


def config_dict(config: TemporalConfig) -> dict:
    """The reference's ``model_config`` dict."""
    return dataclasses.asdict(config)
