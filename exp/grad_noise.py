"""The simple gradient noise scale, from what accumulation already computes.

McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", appendix A: with the
squared norm of a small batch's mean gradient |G_s|^2 (batch B_s) and of a big batch's |G_b|^2
(B_b), unbiased estimates of the true squared gradient and of the trace of the per-sample
covariance are

    |G|^2 = (B_b |G_b|^2 - B_s |G_s|^2) / (B_b - B_s)
    tr(S) = (|G_s|^2 - |G_b|^2) / (1 / B_s - 1 / B_b)

and B_simple = tr(S) / |G|^2 is about the effective batch beyond which larger batches stop
paying. Here the small batches are a window's micro-batches and the big one is the window:
each micro-batch's own gradient is what its backward added to ``.grad`` (one copy of the
gradients is kept to tell it apart). Both estimates are smoothed over updates before the ratio
is taken, as the paper advises, since each is noisy on its own.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import get_total_norm

SMOOTHING = 0.9  # exponential moving average over optimizer updates


def noise_scale_estimates(small_sq: float, big_sq: float, small: float, big: float) -> tuple[float, float]:
    """(|G|^2, tr(S)) from one pair of squared gradient norms and their batch sizes."""
    true_sq = (big * big_sq - small * small_sq) / (big - small)
    trace = (small_sq - big_sq) / (1 / small - 1 / big)
    return true_sq, trace


class GradNoiseScale:
    """Collects, per window, the micro-batches' squared mean-gradient norms (on the device, read
    once at the update) and keeps smoothed |G|^2 and tr(S)."""

    def __init__(self):
        self.previous: list[torch.Tensor] | None = None  # .grad after the last backward (zeros at a window's start)
        self.small_sq: list[torch.Tensor] = []  # per micro-batch: |its mean gradient|^2
        self.small_sizes: list[int] = []
        self.true_sq = self.trace = None  # smoothed
        self.windows = 0
        self.skip_window = False  # e.g. resumed inside a window (its earlier micro-batches unseen): leave it out

    def recommendation(self, micro_batch: int) -> str:
        """The closing line of a run with --log_grad_noise."""
        if self.b_simple is None:
            return "Gradient noise scale: no estimate (no window of two or more micro-batches with a positive |G|^2)"
        target = max(micro_batch, round(self.b_simple))
        steps = math.ceil(target / micro_batch)
        return (f"Gradient noise scale B_simple ~ {self.b_simple:.0f} (smoothed over {self.windows} windows): an effective "
                f"batch of about {target} uses the data best; with micro-batch {micro_batch} that is "
                f"--gradient_accumulation_steps {steps} (or --target_batch_size {target})")  # fmt: skip

    def after_backward(self, params: list[torch.Tensor], scale: float, samples: int) -> None:
        """``scale`` turns what this backward added into the micro-batch's mean gradient (the
        window's normaliser over the micro-batch's own total, over the loss scale)."""
        grads = [p.grad.detach() for p in params]
        if self.previous is None or len(self.previous) != len(grads):
            if self.small_sq:  # a parameter got its first gradient midway: the split is unknown
                self.skip_window = True
            self.previous = [torch.zeros_like(g) for g in grads]  # the one copy, kept from window to window
        torch._foreach_sub_(self.previous, grads)  # minus what this backward added
        self.small_sq.append(get_total_norm(self.previous) ** 2 * scale**2)
        torch._foreach_copy_(self.previous, grads)
        self.small_sizes.append(samples)

    def at_update(self, params: list[torch.Tensor]) -> None:
        """Once the window's gradients are unscaled: their sum is the window's mean gradient.
        A window of one micro-batch says nothing; one with an inf/nan gradient (AMP) is left out."""
        figures = None
        if len(self.small_sq) >= 2 and not self.skip_window:
            small_sq = torch.stack(self.small_sq).tolist()  # one read per window
            big_sq = float(get_total_norm([p.grad for p in params]) ** 2)
            if all(map(math.isfinite, [*small_sq, big_sq])):
                mean_size = sum(self.small_sizes) / len(self.small_sizes)
                figures = noise_scale_estimates(sum(small_sq) / len(small_sq), big_sq, mean_size, sum(self.small_sizes))
        self.forget_window()
        if figures is None:
            return
        if self.true_sq is None:
            self.true_sq, self.trace = figures
        else:
            self.true_sq = SMOOTHING * self.true_sq + (1 - SMOOTHING) * figures[0]
            self.trace = SMOOTHING * self.trace + (1 - SMOOTHING) * figures[1]
        self.windows += 1

    def forget_window(self) -> None:
        if self.previous is not None:
            torch._foreach_zero_(self.previous)
        self.small_sq, self.small_sizes, self.skip_window = [], [], False

    @property
    def b_simple(self) -> float | None:
        if self.true_sq is None or self.true_sq <= 0:
            return None
        return self.trace / self.true_sq
