"""Transformer encoder over patches of the window (PatchTST-style tokens, channels mixed).

The window [B, T, C] is cut into patches of ``--patch_len`` samples; each patch of all
sensors becomes one token of width ``--d_model``. Pre-norm encoder blocks (``--e_layers``,
``--n_heads``, feed-forward width ``--d_ff``) with a ``--norm`` choice, mean pooling over tokens, MLP classifier. With a
padding mask (unequal-length series), padded tokens are ignored by attention and pooling.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import FeatureNorm, classifier_head


class EncoderBlock(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float, norm: str, d_ff: int):
        super().__init__()
        self.norm1, self.norm2 = FeatureNorm(norm, d), FeatureNorm(norm, d)
        self.attention = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.attention(h, h, h, key_padding_mask=padding, need_weights=False)[0])
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class Model(nn.Module):
    def __init__(self, args, dims):
        super().__init__()
        self.patch = min(args.patch_len, dims.length)
        tokens = -(-dims.length // self.patch)  # ceil: the last patch is zero-padded
        self.pad = tokens * self.patch - dims.length
        d = args.d_model
        self.embed = nn.Linear(self.patch * dims.channels, d)
        self.position = nn.Parameter(torch.zeros(1, tokens, d))
        d_ff = getattr(args, "d_ff", None) or 2 * d  # --d_ff, as in Time-Series-Library
        self.blocks = nn.ModuleList(EncoderBlock(d, args.n_heads, args.dropout, args.norm, d_ff) for _ in range(args.e_layers))
        self.norm = FeatureNorm(args.norm, d)
        self.head = classifier_head(d, 2 * d, dims.classes, args.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        if self.pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, self.pad))
        tokens = self.embed(x.reshape(b, -1, self.patch * c)) + self.position
        padding = None
        if mask is not None:  # a token is padding when none of its steps is real
            real = torch.nn.functional.pad(mask, (0, self.pad)).reshape(b, -1, self.patch).any(-1)
            padding = ~real
        for block in self.blocks:
            tokens = block(tokens, padding)
        tokens = self.norm(tokens)
        if padding is None:
            return self.head(tokens.mean(1))
        weights = (~padding).to(tokens.dtype).unsqueeze(-1)
        return self.head((tokens * weights).sum(1) / weights.sum(1).clamp(min=1))
