"""Loss presets for fault classes that look alike.

Every preset is one general per-sample loss with different parameters:

    loss_i = - sum_k q_ik (1 - p_ik)^gamma log p_ik  -  beta * H(p_i)

* ``q_i`` is the soft target of sample i: ``(1 - eps) * onehot + eps * s`` where ``s`` spreads
  the smoothing mass uniformly over all classes (as ``torch.nn.CrossEntropyLoss(label_smoothing)``)
  or, for ``family_share > 0``, partly over the other classes of the same fault family (a
  damper stuck at 25 % and at 75 %): those pairs are genuinely ambiguous, so the loss does not
  push their logits apart as hard as it pushes unrelated faults apart.
* ``gamma > 0`` is the focal term (Lin et al. 2017): easy samples weigh less.
* ``beta > 0`` is the confidence penalty (Pereyra et al. 2017): low-entropy outputs cost extra.

The loss returns **per-sample** values and, with class weights, per-sample weights. It never
reduces: the training loop divides by the accumulation window's total weight, so a window of
micro-batches gives exactly the large-batch weighted mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossPreset:
    name: str
    summary: str
    smoothing: float = 0.0
    smoothing_final: float | None = None  # decays linearly to this over the epochs
    family_share: float = 0.0  # part of the smoothing mass kept inside the fault family
    focal_gamma: float = 0.0
    confidence_penalty: float = 0.0
    class_weights: str = "none"  # what --class_weights auto means for this preset

    def parameters(self) -> str:
        skip = {"name", "summary"}
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name not in skip]
        return ", ".join(parts)


PRESETS = {
    p.name: p
    for p in (
        LossPreset("standard", "plain cross-entropy"),
        LossPreset("hvac_similar", "cross-entropy with label smoothing 0.1", smoothing=0.1),
        LossPreset(
            "hvac_similar_optimized",
            "label smoothing 0.1, half of it kept inside each fault family (similar faults)",
            smoothing=0.1,
            family_share=0.5,
        ),
        LossPreset("imbalanced_focus", "focal loss (gamma 2) with balanced class weights", focal_gamma=2.0, class_weights="balanced"),
        LossPreset("hard_samples", "focal loss (gamma 2): easy samples weigh less", focal_gamma=2.0),
        LossPreset(
            "overconfidence_prevention",
            "label smoothing 0.1 + confidence penalty 0.1",
            smoothing=0.1,
            confidence_penalty=0.1,
        ),
        LossPreset(
            "hvac_adaptive",
            "label smoothing decaying linearly from 0.2 to 0.02 over the epochs, family-aware",
            smoothing=0.2,
            smoothing_final=0.02,
            family_share=0.5,
        ),
        LossPreset(
            "hvac_hard_samples",
            "focal loss (gamma 2) + family-aware label smoothing 0.1",
            smoothing=0.1,
            family_share=0.5,
            focal_gamma=2.0,
        ),
        LossPreset(
            "production_optimized",
            "family-aware smoothing 0.1 + focal gamma 1 + confidence penalty 0.05",
            smoothing=0.1,
            family_share=0.5,
            focal_gamma=1.0,
            confidence_penalty=0.05,
        ),
    )
}


# --class_weights auto turns on balanced weights above this largest/smallest class ratio: on the
# LBNL MZVAV-2-1 file (13 fault-free days, 1 day per fault) they lift macro-F1 from ~0.45 to ~0.8.
IMBALANCE_RATIO = 1.5


def fault_family(class_name: str) -> str:
    """The fault family of a class name: its intensity stripped.

    ``oa_damper_stuck_25`` -> ``oa_damper_stuck``; ``Stuck OA Damper / Fully open (100%)``
    -> ``Stuck OA Damper``; a name without an intensity is its own family.
    """
    name = class_name.split(" / ")[0].strip()
    return re.sub(r"[_\s-]*\d+(\.\d+)?\s*%?$", "", name) or name


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``n / (K * n_c)``, as scikit-learn's ``class_weight='balanced'``; absent classes get 0."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def target_matrix(num_classes: int, smoothing: float, families: list[str] | None, family_share: float) -> torch.Tensor:
    """Row y is the soft target for true class y."""
    k = num_classes
    spread = torch.full((k, k), 1.0 / k, dtype=torch.float64)
    if families is not None and family_share > 0:
        fam = np.asarray(families)
        same = torch.as_tensor((fam[:, None] == fam[None, :]) & ~np.eye(k, dtype=bool), dtype=torch.float64)
        siblings = same.sum(1, keepdim=True)
        within = torch.where(siblings > 0, same / siblings.clamp(min=1), spread)  # no sibling -> uniform
        spread = (1 - family_share) * spread + family_share * within
    return (1 - smoothing) * torch.eye(k, dtype=torch.float64) + smoothing * spread


class PresetLoss(torch.nn.Module):
    def __init__(
        self,
        preset: LossPreset,
        num_classes: int,
        class_weights: np.ndarray | None = None,
        families: list[str] | None = None,
    ):
        super().__init__()
        self.preset = preset
        self.num_classes = num_classes
        self.families = families
        self.class_weights_np = None if class_weights is None else np.asarray(class_weights, dtype=np.float64)
        self.register_buffer("class_weights", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))
        self.register_buffer("targets", target_matrix(num_classes, preset.smoothing, families, preset.family_share))
        self.smoothing = preset.smoothing

    def set_epoch(self, epoch: int, num_epochs: int) -> None:
        """Presets whose smoothing decays over the run update their soft targets here."""
        p = self.preset
        if p.smoothing_final is None:
            return
        progress = epoch / max(num_epochs - 1, 1)
        self.smoothing = p.smoothing + (p.smoothing_final - p.smoothing) * progress
        self.targets = target_matrix(self.num_classes, self.smoothing, self.families, p.family_share).to(self.targets.device)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample losses [B] and per-sample weights [B] (None when unweighted)."""
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # AMP: reduce in fp32
        log_p = F.log_softmax(logits, dim=-1)
        p = self.preset
        if p.smoothing == 0 and p.smoothing_final is None and p.focal_gamma == 0:
            losses = -log_p.gather(1, labels[:, None]).squeeze(1)
        else:
            q = self.targets.to(log_p.dtype)[labels]
            terms = -log_p
            if p.focal_gamma:
                terms = terms * (1 - log_p.exp()).clamp(min=0).pow(p.focal_gamma)
            losses = (q * terms).sum(1)
        if p.confidence_penalty:
            losses = losses + p.confidence_penalty * (log_p.exp() * log_p).sum(1)
        weights = None if self.class_weights is None else self.class_weights.to(losses.dtype)[labels]
        return losses, weights

    def weight_total(self, labels: np.ndarray) -> float:
        """Normaliser contribution of a micro-batch: its sample count or total class weight."""
        if self.class_weights_np is None:
            return float(len(labels))
        return float(self.class_weights_np[labels].sum())


def build_loss(
    name: str,
    num_classes: int,
    train_labels: np.ndarray,
    class_weights: str = "auto",
    families: list[str] | None = None,
) -> PresetLoss:
    preset = PRESETS[name]
    mode = class_weights
    if class_weights == "auto":
        mode = "balanced" if preset.class_weights == "balanced" or is_imbalanced(train_labels, num_classes) else "none"
    weights = balanced_class_weights(train_labels, num_classes) if mode == "balanced" else None
    return PresetLoss(preset, num_classes, weights, families)


def is_imbalanced(labels: np.ndarray, num_classes: int, ratio: float = IMBALANCE_RATIO) -> bool:
    """The largest class has more than ``ratio`` times the samples of the smallest present one."""
    counts = np.bincount(labels, minlength=num_classes)
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() > ratio * counts.min()


def presets_help() -> str:
    return "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
