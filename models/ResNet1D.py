"""1-D ResNet for multivariate windows (Wang, Yan and Oates, 2017), with a ``--norm`` choice.

Three residual blocks of three convolutions (kernels 7, 5, 3), widths d, 2d, 2d with
d = ``--d_model``, global average pooling over time (over the real steps only when a padding
mask is given), then an MLP classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import StatisticsBranch, classifier_head, conv_norm


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, norm: str):
        super().__init__()
        layers = []
        for i, kernel in enumerate((7, 5, 3)):
            layers += [nn.Conv1d(in_ch if i == 0 else out_ch, out_ch, kernel, padding=kernel // 2), conv_norm(norm, out_ch, 1)]
            if i < 2:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv1d(in_ch, out_ch, 1), conv_norm(norm, out_ch, 1)) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def residual_stack(channels: int, d: int, norm: str) -> nn.Sequential:
    """The three residual blocks (widths d, 2d, 2d): [B, channels, T] -> [B, 2d, T]. DualGAFNet's
    ``--temporal resnet`` branch is this stack too."""
    return nn.Sequential(ResidualBlock(channels, d, norm), ResidualBlock(d, 2 * d, norm), ResidualBlock(2 * d, 2 * d, norm))


class Model(nn.Module):
    def __init__(self, args, dims):
        super().__init__()
        d = args.d_model
        self.blocks = residual_stack(dims.channels, d, args.norm)
        self.stats = StatisticsBranch(dims.channels, d) if getattr(args, "window_stats", False) else None
        self.head = classifier_head(2 * d + (d if self.stats is not None else 0), 2 * d, dims.classes, args.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        features = self.blocks(x.transpose(1, 2))  # [B, 2d, T]
        if mask is None:
            pooled = features.mean(-1)
        else:
            weights = mask.to(features.dtype).unsqueeze(1)  # average over real steps only, not padding
            pooled = (features * weights).sum(-1) / weights.sum(-1).clamp(min=1)
        if self.stats is not None:
            pooled = torch.cat([pooled, self.stats(x, mask)], dim=1)
        return self.head(pooled)
