"""Loss-spike detection over a loss curve, with Lightning's knobs (window, warmup, atol, factor).

A pure function of the curve and the knobs: the probe uses it to list spikes in the trace, and
rule IC303 uses it (with the same pack options) to judge them.
"""

import math
import statistics


def spike_ratios(losses: list, window: int, warmup: int, atol: float) -> list:
    """For each step, its loss over the running median of the steps before it.

    Args:
        losses: one loss per step (NaN/inf allowed; they are never a reference).
        window: how many earlier finite losses the median looks back on.
        warmup: steps before any judgement (the median needs a few points).
        atol: a step must also exceed the median by this many nats to count (ignores tiny losses).

    Returns:
        list of (step, loss, median, ratio) for steps above the median by more than atol.

    Example:
        >>> spike_ratios([1.0, 1.0, 1.0, 3.0], window=3, warmup=2, atol=0.1)
        [(3, 3.0, 1.0, 3.0)]
    """
    out = []
    for i, loss in enumerate(losses):
        if i < warmup or not math.isfinite(loss):
            continue
        ref = [x for x in losses[max(0, i - window): i] if math.isfinite(x)]
        if len(ref) < warmup:
            continue
        median = statistics.median(ref)
        if loss - median > atol and median > 0:
            out.append((i, loss, median, loss / median))
    return out


def spike_steps(losses: list, window: int, warmup: int, atol: float, factor: float) -> list:
    """Steps whose loss is at least ``factor`` times the running median (see ``spike_ratios``)."""
    return [i for i, _, _, r in spike_ratios(losses, window, warmup, atol) if r >= factor]
