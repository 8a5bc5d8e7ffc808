"""Instrumentation: activation statistics of chosen modules, and the first non-finite module.

Activations are caught where they are computed, functional calls included (RoBERTa's head calls
``torch.tanh`` directly, so there is no ``nn.Tanh`` to hook): a ``TorchFunctionMode`` sees every
tanh/sigmoid/relu/gelu/silu call, and forward hooks on the watched modules say which module made it.
"""

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_KINDS = {}
for _kind, _fns in {
    "tanh": (torch.tanh, torch.Tensor.tanh, F.tanh),
    "sigmoid": (torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid),
    "relu": (torch.relu, torch.Tensor.relu, F.relu),
    "gelu": (F.gelu,),
    "silu": (F.silu,),
}.items():
    for _fn in _fns:
        _KINDS[_fn] = _kind


class _Mode(TorchFunctionMode):
    def __init__(self, watch):
        super().__init__()
        self.watch = watch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        kind = _KINDS.get(func)
        if kind is not None and self.watch.stack and isinstance(out, torch.Tensor) and args:
            self.watch.record(self.watch.stack[-1], kind, args[0], out)
        return out


class ActivationWatch:
    """Measure dead and saturated activations made inside ``modules`` during one forward pass.

    Args:
        model: the probe model.
        modules: module names to watch (heads and last blocks); activations are credited to the
            innermost watched module that is running.
        heads: module names that are task heads (marked ``"head": True`` in the stats).
        saturation: |tanh| (or |2*sigmoid-1|) above this counts as saturated.
        dead_input: a gelu/silu unit whose input stays below this is dead.

    Example:
        >>> with ActivationWatch(model, ["classifier"], ["classifier"], 0.99, -4.0) as w:
        ...     model(**batch)
        >>> w.stats["classifier"]["saturated_fraction"]
        1.0
    """

    def __init__(self, model, modules, heads, saturation: float, dead_input: float):
        self.model, self.saturation, self.dead_input = model, saturation, dead_input
        self.heads = set(heads)
        self.modules = [m for m in modules if m]
        self.stack, self.stats, self.handles = [], {}, []

    def record(self, name, kind, x, y):
        with torch.no_grad():
            y = y.detach().float()
            units = y.reshape(-1, y.shape[-1]) if y.dim() > 1 else y.reshape(1, -1)
            if kind == "relu":
                dead = (units <= 0).all(0).float().mean().item()
                sat = 0.0
            elif kind in ("gelu", "silu"):
                xin = x.detach().float()
                xin = xin.reshape(-1, xin.shape[-1]) if xin.dim() > 1 else xin.reshape(1, -1)
                dead = (xin < self.dead_input).all(0).float().mean().item()
                sat = 0.0
            else:
                centred = units if kind == "tanh" else 2 * units - 1
                sat = (centred.abs() > self.saturation).float().mean().item()
                dead = (centred.abs() >= 1).all(0).float().mean().item()  # exactly flat: zero gradient
        head = any(name == h or name.startswith(h + ".") for h in self.heads)
        self.stats[name] = {"kind": kind, "dead_fraction": dead, "saturated_fraction": sat, "head": head}

    def _push(self, name):  # hooks must return None, or they replace inputs/outputs
        self.stack.append(name)

    def _pop(self):
        self.stack.pop()

    def __enter__(self):
        mods = dict(self.model.named_modules())
        for name in self.modules:
            for sub_name, sub in mods[name].named_modules(prefix=name):
                self.handles.append(sub.register_forward_pre_hook(lambda m, a, n=sub_name: self._push(n)))
                self.handles.append(sub.register_forward_hook(lambda m, a, o: self._pop()))
        self.mode = _Mode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        for h in self.handles:
            h.remove()
        self.handles = []
        return False


def _nonfinite(x) -> bool:
    if isinstance(x, torch.Tensor):
        return x.is_floating_point() and not bool(torch.isfinite(x).all())
    if isinstance(x, (list, tuple)):
        return any(_nonfinite(v) for v in x)
    if isinstance(x, dict):
        return any(_nonfinite(v) for v in x.values())
    if hasattr(x, "to_tuple"):  # transformers ModelOutput
        return any(_nonfinite(v) for v in x.to_tuple())
    return False


def first_nonfinite_module(model, batch) -> str | None:
    """Re-run the forward pass and return the first module whose output holds NaN or Inf.

    Post-forward hooks fire innermost-first in execution order, so the first hit is the module
    where the non-finite value appeared (transformers' ``DebugUnderflowOverflow`` does the same).
    """
    found = []

    def hook(name):
        def fn(mod, args, out):
            if not found and _nonfinite(out):
                found.append(name)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None
