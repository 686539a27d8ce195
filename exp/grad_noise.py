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

import torch

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
        self.previous: list[torch.Tensor] | None = None  # .grad after the last backward
        self.small_sq: list[torch.Tensor] = []  # per micro-batch: |its mean gradient|^2
        self.small_sizes: list[int] = []
        self.true_sq = self.trace = None  # smoothed
        self.windows = 0
        self.resumed_inside = False  # resumed inside a window (its earlier micro-batches unseen): leave it out

    def recommendation(self, micro_batch: int) -> str:
        """The closing line of a run with --log_grad_noise."""
        if self.b_simple is None:
            return "Gradient noise scale: no estimate (no window of two or more micro-batches with a positive |G|^2)"
        target = max(micro_batch, round(self.b_simple))
        steps = -(-target // micro_batch)
        return (f"Gradient noise scale B_simple ~ {self.b_simple:.0f} (smoothed over {self.windows} windows): an effective "
                f"batch of about {target} uses the data best; with micro-batch {micro_batch} that is "
                f"--gradient_accumulation_steps {steps} (or --target_batch_size {target})")  # fmt: skip

    def after_backward(self, params: list[torch.Tensor], scale: float, samples: int) -> None:
        """``scale`` turns what this backward added into the micro-batch's mean gradient (the
        window's normaliser over the micro-batch's own total, over the loss scale)."""
        grads = [p.grad for p in params]
        if self.previous is not None and len(self.previous) != len(grads):  # a parameter got its first gradient midway
            self.resumed_inside = True  # the split is unknown: leave this window out
            self.previous = None
        added = grads if self.previous is None else torch._foreach_sub(grads, self.previous)
        self.small_sq.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in added])) ** 2 * scale**2)
        self.small_sizes.append(samples)
        self.previous = [g.detach().clone() for g in grads]

    def at_update(self, params: list[torch.Tensor]) -> None:
        """Once the window's gradients are unscaled: their sum is the window's mean gradient."""
        if len(self.small_sq) < 2 or self.resumed_inside:  # one micro-batch says nothing; a resumed window lacks its first
            self.forget_window()
            return
        big_sq = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])) ** 2)
        small_sq = torch.stack(self.small_sq).tolist()  # one read per window
        small, window_samples = sum(self.small_sizes) / len(self.small_sizes), sum(self.small_sizes)
        self.forget_window()
        if window_samples <= small:
            return  # a window of one micro-batch says nothing about the noise
        true_sq, trace = noise_scale_estimates(sum(small_sq) / len(small_sq), big_sq, small, window_samples)
        if self.true_sq is None:
            self.true_sq, self.trace = true_sq, trace
        else:
            self.true_sq = SMOOTHING * self.true_sq + (1 - SMOOTHING) * true_sq
            self.trace = SMOOTHING * self.trace + (1 - SMOOTHING) * trace
        self.windows += 1

    def forget_window(self) -> None:
        self.previous, self.small_sq, self.small_sizes, self.resumed_inside = None, [], [], False

    @property
    def b_simple(self) -> float | None:
        if self.true_sq is None or self.true_sq <= 0:
            return None
        return self.trace / self.true_sq
