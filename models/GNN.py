"""Graph network over the sensor graph (plain torch, no torch_geometric needed).

Every node (sensor) encodes its own window with a weight-shared temporal CNN and adds a
learned sensor embedding; graph-convolution layers H <- H + act(norm(A H W)) mix
neighbouring sensors along the correlation graph; the node features, in fixed sensor order,
go to an MLP classifier.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.layers import FeatureNorm, classifier_head, conv_norm


class Model(nn.Module):
    def __init__(self, args, dims):
        super().__init__()
        h = args.d_model
        self.temporal = nn.Sequential(
            nn.Conv1d(1, h // 2, 7, stride=2, padding=3), nn.ReLU(),  # no norm here: it would erase the level
            nn.Conv1d(h // 2, h, 5, stride=2, padding=2), conv_norm(args.norm, h, 1), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )  # fmt: skip
        self.node_embedding = nn.Parameter(torch.zeros(dims.channels, h))
        self.graph_layers = nn.ModuleList(nn.Linear(h, h) for _ in range(args.e_layers))
        self.graph_norms = nn.ModuleList(FeatureNorm(args.norm, h) for _ in range(args.e_layers))
        self.dropout = nn.Dropout(args.dropout)
        self.head = classifier_head(dims.channels * h, 2 * h, dims.classes, args.dropout)

    def forward(self, nodes: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        b, n, t = nodes.shape
        h = self.temporal(nodes.reshape(b * n, 1, t)).reshape(b, n, -1) + self.node_embedding
        for layer, norm in zip(self.graph_layers, self.graph_norms):
            h = h + self.dropout(torch.relu(norm(adjacency @ layer(h))))
        return self.head(h.flatten(1))
