"""Remedy 1: a task head that is zero, constant, badly scaled, symmetric or non-finite gets a new init.

Where the check built the task model (a transformers class from config.json), the head's module is
re-initialised by the model's own ``_init_weights``, applied to a seeded copy of that module alone
(built on the meta device: no weights are loaded). Without a task model (a vendor's wrapper, a
plain state dict, a head in ``score_head.pt``, a timm folder without timm) the layer gets PyTorch's
default init for its type. Only stored tensors are rewritten: a head the model's code creates at
load is not in SRC, so there is nothing to write (the finding is listed as not fixable here).
"""

import math

from .. import tensors as T
from .remedy import Step, Unfixable

# the rules whose findings on a head ask for a new init
RULES = ("IC101", "IC102", "IC103", "IC104", "IC105")
_ACTIVE = ("error", "warning")


def plan(scan, report, settings) -> list:
    """One ``Step`` per head module with a finding: every stored parameter of that module is re-initialised."""
    modules, out = {}, []
    for f in report.findings:
        if f.rule not in RULES or not f.active or f.severity not in _ACTIVE or not f.param:
            continue
        rec = scan.by_name.get(f.param)
        if rec is None or rec.role in (T.NORM_GAIN, T.BUFFER) or rec.origin not in (T.HEAD, T.NEW):
            continue
        if rec.file == "(task model)":   # created by the model's code at load: nothing stored to rewrite
            out.append(Unfixable(rec.name, f.rule, "created by the task model's own code at load, not stored in SRC: "
                                                   "fix the code that initialises it"))
            continue
        modules.setdefault((rec.file, rec.module), f.rule)
    if not modules:
        return out
    init = ModelInit.for_scan(scan)
    by_init = {}   # modules set by one init (a two-layer head: classifier) for one rule share one seeded copy of it
    for (file, module), rule in modules.items():
        recs = [r for r in scan.records if r.file == file and r.module == module and r.role != T.BUFFER
                and r.origin in (T.HEAD, T.NEW) and not r.extra.get("tied_to")]
        found = init.locate(recs) if init is not None else None
        if found is not None:
            cand, inside = found
            by_init.setdefault((cand, rule), {}).update(inside)
            continue
        step = timm_step(scan, recs, rule) if init is None else None
        out.append(step or default_step(module, recs, rule, scan))
    out += [init.step(cand, inside, rule) for (cand, rule), inside in by_init.items()]
    return out


def timm_step(scan, recs: list, rule: str):
    """A timm folder's head, re-initialised by timm's own init (a seeded ``create_model``), when timm imports."""
    from .. import timmfolder

    cfg = scan.config or {}
    if not recs or not timmfolder.is_timm_config(cfg) or timmfolder.missing_reason() is not None:
        return None
    folder = str(scan.checkpoint.root)

    def apply(tensors, generator):
        import torch

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        model, _ = timmfolder.build(folder, cfg, seed, state={})
        own = model.state_dict()
        return {name: own[name].to(t.dtype).reshape(t.shape) for name, t in tensors.items()}

    if any(r.name not in _timm_keys(cfg) for r in recs):
        return None
    return Step(names=tuple(r.name for r in recs), rule=rule, apply=apply,
                remedy=f"timm's own init of {cfg.get('architecture')} (timm.create_model on a seed), this module alone")


def _timm_keys(cfg) -> set:
    import torch

    from .. import timmfolder

    try:
        with torch.device("meta"):
            model, _ = timmfolder.build("", cfg, 0, state={})
        return set(model.state_dict())
    except Exception:  # noqa: BLE001
        return set()


class ModelInit:
    """The task model's skeleton (meta device) and the map from checkpoint names to its parameters."""

    def __init__(self, model, names: dict):
        self.model, self.names = model, names   # names: checkpoint name -> model parameter name

    @classmethod
    def for_scan(cls, scan):
        recipe = scan.facts.get("task_model")
        if not recipe or recipe.get("library") == "timm" or recipe.get("module") is not None:
            return None
        try:
            from ..taskmodel import build_skeleton, checkpoint_names

            model = build_skeleton(recipe)
            names = {ck: key for key, ck in checkpoint_names(model, scan.by_name).items() if ck in scan.by_name}
        except Exception:  # noqa: BLE001 - no skeleton: PyTorch's default init stands in, and the log says so
            return None
        return cls(model, names)

    def locate(self, recs: list):
        """``(module, {name: key inside it})``: the module whose ``_init_weights`` sets ``recs`` (one
        module's parameters), or None.

        ``_init_weights`` may set a layer differently as part of its parent (T5 gives the
        classification head's ``out_proj`` d_model^-0.5 when it meets ``T5ClassificationHead``, 1.0
        as a bare Linear): a head outside ``base_model_prefix`` is initialised as its top-level
        module, the reference IC105 judged it by (``tensors.heads.label_from_model``). Otherwise the
        module itself is tried first, then each enclosing module, and the first whose init writes
        every tensor is used (the copy starts as NaN, so an untouched value shows).
        """
        keys = {r.name: self.names.get(r.name) for r in recs}
        if not recs or any(k is None for k in keys.values()):
            return None
        paths = {k.rsplit(".", 1)[0] for k in keys.values()}
        if len(paths) != 1:
            return None
        path = paths.pop()
        prefix = getattr(self.model, "base_model_prefix", "") or ""
        order = _enclosing(path)
        if prefix and not path.startswith(prefix + ".") and path != prefix:
            order = order[-1:] + order[:-1]   # the head's top-level module first
        for cand in order:
            try:
                trial = _init_copy(self.model, cand, None)
            except Exception:  # noqa: BLE001, S112 - custom _init_weights code may reject a lone module
                continue
            inside = {name: key[len(cand) + 1:] if cand != key else "" for name, key in keys.items()}
            if all(k in trial and bool(trial[k].isfinite().all()) for k in inside.values()):
                return cand, inside
        return None

    def step(self, cand: str, inside: dict, rule: str) -> Step:
        """Re-initialise the tensors ``inside`` (name -> key in module ``cand``) from one seeded copy of ``cand``."""
        from ..tensors.heads import _owner

        model = self.model
        owner = _owner(model, cand)
        cls = next((c.__name__ for c in type(owner).__mro__ if "_init_weights" in c.__dict__), type(owner).__name__)
        std = _declared_std(owner)

        def apply(tensors, generator):
            new = _init_copy(model, cand, generator)
            return {name: new[inside[name]].to(t.dtype).reshape(t.shape) for name, t in tensors.items()}

        what = f"normal(0, {std:g})" if std and _is_normal_std(model, cand, inside.values(), std) else "the model's init"
        return Step(names=tuple(sorted(inside)), rule=rule,
                    remedy=f"{what} from {cls}._init_weights, applied to a seeded copy of {cand}", apply=apply)


def _enclosing(path: str) -> list:
    """``a.b.c`` -> ``[a.b.c, a.b, a]``."""
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _is_normal_std(model, cand, keys, std) -> bool:
    """The init gives the step's weight matrices about ``std`` (so "normal(0, initializer_range)" is true)."""
    state = _init_copy(model, cand, None)
    for key in keys:
        t = state[key]
        if t.dim() >= 2 and t.numel() >= 16 and not 0.7 * std < float(t.float().std()) < 1.3 * std:
            return False
    return True


def _declared_std(owner):
    cfg = getattr(owner, "config", None)
    for key in ("initializer_range", "init_std"):
        v = getattr(cfg, key, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


def _init_copy(model, path: str, generator) -> dict:
    """Parameters of a seeded copy of ``model``'s module ``path`` after its owner's ``_init_weights``."""
    import copy

    import torch

    from ..tensors.heads import _clear_init_flags, _init_post_order, _owner

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) if generator is not None else 0
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        module = copy.deepcopy(model.get_submodule(path))
        module.to_empty(device="cpu")
        for t in module.state_dict().values():   # NaN shows a value the init did not write
            if t.is_floating_point():
                t.fill_(float("nan"))
        _clear_init_flags(module)
        _init_post_order(_owner(model, path), module)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def default_step(module: str, recs: list, rule: str, scan) -> Step:
    """PyTorch's default init for the layer type: what ``nn.Linear`` / ``nn.ConvNd`` / ``nn.Embedding`` start from."""
    weight = next((r for r in recs if r.leaf != "bias" and len(r.shape) >= 2), None)
    kind = {T.EMBEDDING: "nn.Embedding", T.CONV: f"nn.Conv{max(len(weight.shape) - 2, 1)}d"}.get(
        weight.role, "nn.Linear") if weight is not None else "nn.Linear"
    timm = bool((scan.config or {}).get("pretrained_cfg")) and "architecture" in (scan.config or {})
    why = " (timm is not installed: its own init is unavailable)" if timm else ""
    if kind == "nn.Embedding":
        text = "normal(0, 1): PyTorch's default for nn.Embedding"
    else:
        text = f"U(±1/sqrt(fan_in)) for weight and bias: PyTorch's default for {kind} (kaiming_uniform_, a=sqrt(5))"
    fan_in = _fan_in(weight) if weight is not None else None

    def apply(tensors, generator):
        import torch

        out = {}
        for name, t in tensors.items():
            v = torch.empty(t.shape, dtype=torch.float32)
            if kind == "nn.Embedding" and v.dim() >= 2:
                torch.nn.init.normal_(v, 0.0, 1.0, generator=generator)
            elif v.dim() >= 2:
                torch.nn.init.kaiming_uniform_(v, a=math.sqrt(5), generator=generator)
            else:   # a bias (or a 1-D weight): U(±1/sqrt(fan_in)) of its layer
                bound = 1 / math.sqrt(fan_in or max(v.numel(), 1))
                torch.nn.init.uniform_(v, -bound, bound, generator=generator)
            out[name] = v.to(t.dtype)
        return out

    return Step(names=tuple(r.name for r in recs), rule=rule, remedy=text + why, apply=apply)


def _fan_in(rec) -> int:
    """Fan-in as PyTorch computes it from a stored weight: in-features x kernel size."""
    shape = rec.shape
    if rec.transposed and len(shape) == 2:
        return shape[0]
    return math.prod(shape[1:])
