"""Loss-spike detection over a loss curve, with Lightning's knobs (window, warmup, atol, factor).

A pure function of the curve and the knobs: the probe uses it to list spikes in the trace, and
rule IC303 uses it (with the same pack options) to judge them.
"""

import math
import statistics


def spike_ratios(losses: list, window: int, warmup: int, atol: float, early_factor: float | None = None) -> list:
    """For each step, its loss over the running median of the steps before it.

    Args:
        losses: one loss per step (NaN/inf allowed; they are never a reference).
        window: how many earlier finite losses the median looks back on.
        warmup: steps before the running median is trusted (it needs a few points).
        atol: a step must also exceed the median by this many nats to count (ignores tiny losses).
        early_factor: the steps inside ``warmup`` are judged too, against the median of the finite
            steps before them (the first step's loss, for step 1), but count only at this factor or
            above: a baseline of one or two points is noisy, and a jump from 50 to 236 at step 2 is a
            spike all the same. None: not judged (Lightning's behaviour).

    Returns:
        list of (step, loss, median, ratio) for steps above the median by more than atol.

    Example:
        >>> spike_ratios([1.0, 1.0, 1.0, 3.0], window=3, warmup=2, atol=0.1)
        [(3, 3.0, 1.0, 3.0)]
        >>> spike_ratios([50.0, 236.0, 40.0], window=10, warmup=3, atol=0.5, early_factor=3.0)
        [(1, 236.0, 50.0, 4.72)]
    """
    out = []
    for i, loss in enumerate(losses):
        if not math.isfinite(loss) or (i < warmup and early_factor is None):
            continue
        ref = [x for x in losses[max(0, i - window): i] if math.isfinite(x)]
        if not ref or (i >= warmup and len(ref) < warmup):
            continue
        median = statistics.median(ref)
        if loss - median > atol and median > 0 and (i >= warmup or loss / median >= early_factor):
            out.append((i, loss, median, loss / median))
    return out


def spike_steps(losses: list, window: int, warmup: int, atol: float, factor: float,
                early_factor: float | None = None) -> list:
    """Steps whose loss is at least ``factor`` times the running median (see ``spike_ratios``)."""
    return [i for i, _, _, r in spike_ratios(losses, window, warmup, atol, early_factor) if r >= factor]
