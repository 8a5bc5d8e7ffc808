"""The probe's training loop: AdamW on one fixed batch, with or without instrumentation.

``Recorder`` measures per step: the loss (before that step's update), every parameter's gradient
norm, which parameters never got a gradient, and the update-to-weight ratio. It only measures;
the rules in ``initcheck/rules/probe.py`` judge.
"""

import math

import torch

# the update-to-weight ratio reads every weight three times (copy, difference, norms): ~0.5 s a
# step at 110M parameters on 2 cores, so it is sampled on steps 0, 5, 10, ... (a mean all the same)
UPDATE_EVERY = 5


def loss_of(out):
    """The scalar loss from a model output: ``out.loss``, ``out["loss"]`` or a scalar tensor."""
    if isinstance(out, torch.Tensor):
        return out if out.dim() == 0 else None
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, dict):
        loss = out.get("loss")
    return loss


def logits_of(out):
    """The logits tensor of an output: the output itself, ``out.logits`` or ``out["logits"]``."""
    if isinstance(out, torch.Tensor):
        return out if out.dim() >= 1 else None
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    if logits is None and isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        logits = out[0]
    return logits if isinstance(logits, torch.Tensor) and logits.dim() >= 1 else None


class CrossEntropy:
    """The loss a training script adds to a model that returns only logits: cross-entropy over
    the last dimension (C classes), labels of -100 ignored."""

    def __init__(self, labels, classes: int):
        self.labels = labels
        self.classes = classes

    def __call__(self, out):
        logits = logits_of(out)
        if logits is None:
            return None
        return torch.nn.functional.cross_entropy(logits.reshape(-1, self.classes).float(),
                                                 self.labels.reshape(-1).long(), ignore_index=-100)


def loss_for(model, batch: dict):
    """``(batch, loss_fn)``: ``loss_fn`` is None when the model computes its own loss.

    A plain ``nn.Module`` (no ``.config``) may return only logits: then the probe computes the
    cross-entropy itself against ``batch["labels"]``, which ``forward`` gets only if it takes them.
    """
    if getattr(model, "config", None) is not None or "labels" not in batch:
        return batch, None
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
        takes = "labels" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        takes = True
    call = dict(batch) if takes else {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        out = model(**call)
    if loss_of(out) is not None:
        return call if takes else batch, None
    logits = logits_of(out)
    labels = batch["labels"]
    if logits is None or not isinstance(labels, torch.Tensor) or labels.is_floating_point():
        return call, None
    return call, CrossEntropy(labels, int(logits.shape[-1]))


class Recorder:
    """Per-step measurements for the trainable ``params`` (a name -> Parameter dict)."""

    def __init__(self, params: dict):
        self.names = list(params)
        self.params = list(params.values())
        self.losses = []
        self.grad_norms = []      # per step: tensor[P] (NaN where the gradient was None)
        self.update_norms = []    # per sampled step: (||dW|| tensor[P], ||W|| tensor[P])
        self.update_steps = []
        self.live = torch.zeros(len(self.params), dtype=torch.bool)
        self.reached = torch.zeros(len(self.params), dtype=torch.bool)  # got a gradient tensor at all
        self.nonfinite = None     # {"step", "module", "what"}
        # step 0's logits, for IC301: their spread across classes (RMS over rows), and the softmax
        # cross-entropy averaged over every label (logsumexp - mean), free of the batch's label draw
        self.logit_std = self.any_label_loss = None
        self.layer_scales = None  # optional (per block: its layer-scale parameters, per param: its block or -1)
        self.scale_rows = []      # per step: tensor[P], the layer scale each gradient was multiplied by
        self._prev = None

    def on_output(self, step: int, out):
        if step or (logits := logits_of(out)) is None or logits.shape[-1] < 2 or not logits.numel():
            return
        var = every = 0.0
        rows = logits.detach().reshape(-1, logits.shape[-1])
        with torch.no_grad():
            for z in rows.split(64):   # an LM's fp32 logits, 64 rows at a time
                z = z.float()
                var += float(z.var(dim=-1, unbiased=False).sum())
                every += float((torch.logsumexp(z, dim=-1) - z.mean(dim=-1)).sum())
        self.logit_std, self.any_label_loss = math.sqrt(var / len(rows)), every / len(rows)

    def on_loss(self, step: int, loss: float) -> bool:
        self.losses.append(loss)
        return math.isfinite(loss)

    def on_backward(self, step: int) -> bool:
        """Gradient norms of this step; False when a gradient is not finite."""
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        norms = torch.full((len(self.params),), float("nan"))
        if idx:
            got = torch.stack(torch._foreach_norm([self.params[i].grad for i in idx])).float().cpu()
            norms[idx] = got
        self.grad_norms.append(norms)
        if self.layer_scales is not None:   # their values at this step: AdamW moves a 1e-6 scale 50x a step
            scales, block_of = self.layer_scales
            with torch.no_grad():
                mean = torch.tensor([float(torch.stack([p.detach().float().abs().mean() for p in ps]).mean())
                                     for ps in scales] + [1.0])
            row = mean[block_of]   # -1: the trailing 1.0
            self.scale_rows.append(torch.where(row > 0, row, torch.ones_like(row)))
        self.live |= norms > 0  # NaN compares False: a None gradient is not life
        self.reached[idx] = True
        bad = [i for i in idx if not math.isfinite(norms[i])]
        if bad:
            # backward runs output-to-input: the last parameter (in forward order) with a bad
            # gradient is the closest to where it first appeared
            name = self.names[bad[-1]]
            self.nonfinite = {"step": step, "module": name.rsplit(".", 1)[0], "what": "gradient"}
            return False
        return True

    def before_update(self, step: int):
        if step % UPDATE_EVERY:
            return
        with torch.no_grad():
            cur = [p.detach() for p in self.params]
            if self._prev is None:  # one buffer for the whole run: no 4-bytes-per-parameter allocation per step
                self._prev = [torch.empty_like(p) for p in cur]
            torch._foreach_copy_(self._prev, cur)

    def after_update(self, step: int):
        if step % UPDATE_EVERY:
            return
        self.update_steps.append(step)
        with torch.no_grad():
            cur = [p.detach() for p in self.params]
            torch._foreach_sub_(self._prev, cur)
            dn = torch.stack(torch._foreach_norm(self._prev)).float().cpu()
            wn = torch.stack(torch._foreach_norm(cur)).float().cpu()
        self.update_norms.append((dn, wn))


def train(model, batch: dict, params: dict, steps: int, lr: float, recorder: Recorder | None = None,
          first_forward=None, loss_fn=None, on_step=None):
    """Train ``params`` of ``model`` on the fixed ``batch`` for ``steps`` AdamW steps.

    Args:
        model: the probe's copy (dropout is off: eval mode, so the batch loss is comparable).
        batch: keyword inputs with labels, already on the model's device.
        params: name -> parameter to train.
        steps, lr: the probe's length and AdamW learning rate.
        recorder: a ``Recorder``, or None for the bare loop (the benchmark's reference).
        first_forward: a context manager factory wrapped around step 0's forward (activations).
        loss_fn: ``out -> loss`` for models that return only logits (``loss_for``); None: ``out.loss``.
        on_step: ``on_step(step, steps, loss)`` once per step, after its loss is known (progress).

    Returns:
        list of float: the loss of each step before its update (stops at a non-finite one).
    """
    opt = torch.optim.AdamW(list(params.values()), lr=lr)
    losses = []
    for step in range(steps):
        if step == 0 and first_forward is not None:
            with first_forward():
                out = model(**batch)
        else:
            out = model(**batch)
        loss = loss_fn(out) if loss_fn is not None else loss_of(out)
        if loss is None:
            raise ValueError("the model returned no loss for the probe batch (are labels accepted?)")
        value = float(loss.detach())
        losses.append(value)
        if recorder is not None:
            recorder.on_output(step, out)
        if on_step is not None:
            on_step(step, steps, value)
        if recorder is not None and not recorder.on_loss(step, value):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recorder is not None:
            if not recorder.on_backward(step):
                break
            recorder.before_update(step)
        opt.step()
        if recorder is not None:
            recorder.after_update(step)
    return losses
