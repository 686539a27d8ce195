"""DualGAFNet: two branches (GASF and GADF images of every sensor) fused per sensor.

1. Each branch encodes every sensor's image with one weight-shared 2-D CNN:
   [B, C, S, S] -> [B*C, 1, S, S] -> [B, C, F].
2. Fusion per sensor of the GASF and GADF features (``--fusion``): ``gated`` (a learned gate
   per feature), ``concat`` (then a projection) or ``add``.
3. Self-attention across sensors, with a learned embedding per sensor, so the model relates
   e.g. mixed-air temperature to the damper signal.
4. A temporal branch: two 1-D residual blocks over the raw window, all sensors together, so
   patterns across sensors in time (a valve opening while the supply temperature falls) are
   seen directly; pooled over time. ``--temporal resnet`` makes it ResNet1D's three blocks
   (widths d, 2d, 2d); ``--no_temporal`` leaves it out (the plain image model).
   On the real LBNL SZCAV file the image branches alone lost to a random forest on window
   statistics (0.51 vs 0.58 macro-F1); with this branch DualGAFNet beats it (0.61), and on the
   simulator it lifts the default run from 0.87 to 0.96 (benchmarks/README.md).
5. ``--window_stats``: the window statistics of every sensor (mean, std, min, max, last minus
   first), flattened, through one linear layer: the levels a random forest reads, given to the
   head directly rather than only through each sensor's token.
6. The sensors' features, flattened in a fixed order, the temporal and the statistics features
   go to an MLP classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import FeatureNorm, StatisticsBranch, classifier_head, conv_norm, window_statistics
from models.ResNet1D import ResidualBlock, residual_stack


class SignalEncoder(nn.Module):
    """Weight-shared CNN for one-channel S x S images -> ``features`` per image."""

    def __init__(self, width: int, features: int, norm: str):
        super().__init__()
        widths = (width // 4, width // 2, width)
        layers, in_ch = [], 1
        for i, out_ch in enumerate(widths):  # every conv halves the image: cheap enough for CPUs
            # No normalisation on the stem: a per-sample norm there would erase the sensor's level.
            stem_norm = nn.Identity() if i == 0 else conv_norm(norm, out_ch, 2)
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), stem_norm, nn.ReLU()]
            in_ch = out_ch
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        # Channels-last weights and images: oneDNN's convolutions (above all their backward) run
        # about 1.3x faster that way on the CPU (benchmarks/README.md); the same function.
        self.body.to(memory_format=torch.channels_last)
        self.proj = nn.Linear(in_ch, features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        images = images.reshape(b * c, 1, h, w).contiguous(memory_format=torch.channels_last)
        return self.proj(self.body(images)).reshape(b, c, -1)


class Fusion(nn.Module):
    def __init__(self, kind: str, features: int):
        super().__init__()
        self.kind = kind
        if kind == "gated":
            self.gate = nn.Linear(2 * features, features)
        elif kind == "concat":
            self.proj = nn.Linear(2 * features, features)

    def forward(self, summation: torch.Tensor, difference: torch.Tensor) -> torch.Tensor:
        if self.kind == "add":
            return summation + difference
        both = torch.cat([summation, difference], dim=-1)
        if self.kind == "concat":
            return self.proj(both)
        gate = torch.sigmoid(self.gate(both))
        return gate * summation + (1 - gate) * difference


TEMPORAL_BRANCHES = ("resnet", "small")  # --temporal
TEMPORAL_BEFORE_THE_FLAG = "small"  # the branch of checkpoints written before --temporal existed
# The default: ResNet1D's blocks did not gain on the three real files together (benchmarks/README.md).
TEMPORAL_DEFAULT = "small"


def temporal_branch(args, channels: int) -> tuple[nn.Sequential | None, int]:
    """``--temporal``: ResNet1D's three residual blocks (``resnet``) or the two blocks of width d of
    the first version (``small``, what checkpoints written before the flag have); ``--no_temporal``:
    none. Returns the branch and its feature width."""
    f, norm = args.d_model, args.norm
    if getattr(args, "no_temporal", False):
        return None, 0
    if getattr(args, "temporal", TEMPORAL_BEFORE_THE_FLAG) == "resnet":
        return residual_stack(channels, f, norm), 2 * f
    return nn.Sequential(ResidualBlock(channels, f, norm), ResidualBlock(f, f, norm)), f


class Model(nn.Module):
    def __init__(self, args, dims):
        super().__init__()
        f = args.d_model
        self.gasf_encoder = SignalEncoder(args.d_model, f, args.norm)
        self.gadf_encoder = SignalEncoder(args.d_model, f, args.norm)
        self.fusion = Fusion(args.fusion, f)
        self.statistics = nn.Sequential(nn.Linear(5, f), nn.GELU(), nn.Linear(f, f))
        self.signal_embedding = nn.Parameter(torch.zeros(dims.channels, f))
        self.attention = nn.MultiheadAttention(f, args.n_heads, dropout=args.dropout, batch_first=True)
        self.attention_norm = FeatureNorm(args.norm, f)
        self.temporal, temporal_width = temporal_branch(args, dims.channels)
        # --window_stats: the same statistics, all sensors at once, straight to the head (as in ResNet1D).
        self.window_stats = StatisticsBranch(dims.channels, f) if getattr(args, "window_stats", False) else None
        head_in = dims.channels * f + temporal_width + (f if self.window_stats is not None else 0)
        self.head = classifier_head(head_in, 2 * f, dims.classes, args.dropout)

    def forward(self, gasf: torch.Tensor, gadf: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        signals = self.fusion(self.gasf_encoder(gasf), self.gadf_encoder(gadf))
        signals = signals + self.statistics(window_statistics(window)) + self.signal_embedding
        attended, _ = self.attention(signals, signals, signals, need_weights=False)
        signals = self.attention_norm(signals + attended)
        features = signals.flatten(1)
        if self.temporal is not None:
            features = torch.cat([features, self.temporal(window.transpose(1, 2)).mean(-1)], dim=1)
        if self.window_stats is not None:
            features = torch.cat([features, self.window_stats(window)], dim=1)
        return self.head(features)
