"""The probe run itself (imports torch; ``initcheck.probe`` loads this lazily)."""

import contextlib
import math
import re
import time

import torch

from .. import tensors as T
from ..errors import InputError
from . import batches, hooks, inputs, loop, model as M, offload as OF, trace as TR
from .spikes import spike_steps

# rule ids whose pack options the measurement itself needs
SKIPPED, SPIKE, ACTIVATIONS = "IC300", "IC303", "IC306"
# below this many parameters the ops are too small to split across threads: one CPU thread
# avoids OpenMP barrier stalls (10 ms per tiny matmul on a busy 2-core machine instead of 0.1 ms)
SINGLE_THREAD_PARAMS = 5_000_000


def run_probe(scan, settings, pack=None, on_step=None) -> dict:
    """Run the probe and store its trace in ``scan.probe``.

    Args:
        scan: the ``Scan``; ``scan.facts["task_model"]`` is the recipe (``module`` or
            ``path`` + ``model_class`` + ``num_labels`` + ``task`` + ``trust_remote_code``).
        settings: ``Settings`` (probe_steps, lr, batch_size, seq_len, seed, device, train, data, batch).
        pack: the resolved rule pack; loaded from ``settings`` when None.
        on_step: ``on_step(step, steps, loss)`` after each training step (progress display); the
            probe itself prints nothing.

    Returns:
        dict: the trace (also set as ``scan.probe``); ``status`` is "ran" or "skipped".

    Raises:
        InputError: a ``--data`` file that is missing or malformed.

    Example:
        >>> scan.facts["task_model"] = {"module": model, "task": "sequence-classification"}
        >>> run_probe(scan, Settings(probe_steps=5))["loss"]
        [1.0986, 1.0971, ...]
    """
    if pack is None:
        from ..packs import pack_for

        pack = pack_for(settings)
    started = time.perf_counter()
    recipe = scan.facts.get("task_model") or {}
    task = recipe.get("task") or settings.task
    tr = _empty_trace(settings, task, recipe)
    scan.probe = tr
    if scan.facts.get("task_model_error"):
        return _skip(tr, f"{scan.facts['task_model_error']}; the load-report checks and the probe did not run")
    # a plain nn.Module with a ready batch needs no task: its loss (or logits + labels) says it all
    custom = recipe.get("module") is not None and settings.batch is not None
    if not recipe or not (task or custom):
        return _skip(tr, "the task model is unknown: pass --task (and --num-labels) or check a model "
                         "whose config names a task class, e.g. BertForSequenceClassification")
    try:
        return _probe(scan, settings, pack, tr, recipe, task, started, on_step)
    except InputError:
        raise  # a bad --data file is the user's to fix: exit 2
    except Exception as e:  # noqa: BLE001 - whatever breaks, the probe says why (IC300)
        scan.probe = _skip(tr, f"the probe failed: {type(e).__name__}: {e}".splitlines()[0][:400])
        return scan.probe


def _probe(scan, settings, pack, tr, recipe, task, started, on_step=None) -> dict:
    device = settings.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        return _skip(tr, f"--device {device} asked for, but this torch ({torch.__version__}) sees no CUDA "
                         "device; run on a GPU machine or use --device cpu")
    need, avail = _memory(scan, recipe, settings)
    budget = _budget(avail, pack.rules[SKIPPED])
    placement = None
    if budget is not None and need > budget:
        if settings.train != "heads" or recipe.get("module") is not None:
            return _skip(tr, _too_big(need, avail, pack.rules[SKIPPED], settings))
        placement = _offload_plan(scan, recipe, settings, need, avail, budget, pack.rules[SKIPPED])
        if isinstance(placement, str):
            return _skip(tr, placement)
        tr["offload"] = OF.summary(placement)
    with contextlib.ExitStack() as cleanup:  # removes the offload folder, error or not
        try:
            if placement is None:
                model = M.build(recipe, settings.seed)
                model.to(device)
            else:
                model, tr["offload"]["folder_files"] = OF.load(recipe, placement, settings.seed, cleanup)
        except Exception as e:  # the load problem itself is the load rules' business
            from ..taskmodel import build_failure

            return _skip(tr, build_failure({**recipe, "model_class": tr["model_class"] or "the task model"}, e))
        return _run(scan, settings, pack, tr, model, task, recipe, started, on_step)


def _run(scan, settings, pack, tr, model, task, recipe, started, on_step=None) -> dict:
    """Train the built model on the probe batch and fill the trace."""
    device = settings.device
    model.eval()  # dropout off: the loss on the fixed batch must be comparable step to step
    # ... but batch norms normalise by the batch, as in the fine-tune itself: in eval mode they use the running
    # statistics, and where those are far from the data (never trained, or not saved) the signal vanishes or
    # explodes layer by layer and the probe reports dead gradients no training run would see
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train()
    tr["model_class"] = type(model).__name__
    _give_pad(model, task)
    _give_decoder_start(model)
    new_names = [r.name for r in scan.records if r.origin == T.NEW]
    heads = recipe.get("heads") or M.head_modules(model, new_names, task)  # timm: pretrained_cfg names them
    params = {n: p for n, p in model.named_parameters()
              if settings.train == "all" or M.in_heads(n, heads)}
    for n, p in model.named_parameters():
        p.requires_grad_(n in params)
    if not params:
        return _skip(tr, f"no trainable parameters with --train {settings.train} (heads found: {heads or 'none'})")
    notes = []
    batch = _batch(model, task, settings, recipe, pack.rules[SKIPPED], notes)
    tr["inputs_note"] = "; ".join(notes) or None
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    batch, loss_fn = loop.loss_for(model, batch)
    # the batch as built (images after image_pixels_per_batch, text as tokenised), not as asked for
    tr["inputs"] = {k: list(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    tr["batch_size"], tr["seq_len"] = TR.batch_dims(tr["inputs"], tr["batch_size"])
    tr["head_modules"] = heads
    tr["head_origin"] = _head_origin(model, scan, heads, new_names)
    _expect(tr, model, task, batch, loss_fn)

    act = pack.rules[ACTIVATIONS]
    watched = heads + [b for b in M.last_blocks(model) if not M.in_heads(b, heads)]
    watch = hooks.ActivationWatch(model, watched, heads, act["saturation"], act["dead_input"])
    rec = loop.Recorder(params)
    rec.layer_scales = _layer_scales(model, rec.names)
    threads = torch.get_num_threads()
    # decided by model size only: the thread count changes float summation order, and the same
    # input must give the same trace whatever the machine's load
    if device == "cpu" and sum(p.numel() for p in model.parameters()) < SINGLE_THREAD_PARAMS:
        torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]), torch.enable_grad(), _restore_threads(threads):
        torch.manual_seed(settings.seed)
        try:
            losses = loop.train(model, batch, params, settings.probe_steps, settings.lr, rec, lambda: watch,
                                loss_fn=loss_fn, on_step=on_step)
        except (RuntimeError, ValueError, TypeError) as e:
            return _skip(tr, f"the model's forward/backward failed on the probe batch: {type(e).__name__}: {e}".splitlines()[0])
    if losses and not math.isfinite(losses[-1]):
        module = hooks.first_nonfinite_module(model, batch)
        rec.nonfinite = {"step": len(losses) - 1, "module": module or "loss",
                         "what": "activation" if module else "loss"}
    _fill(tr, model, rec, losses, watch, pack, _checkpoint_names(model, scan))
    tr["status"] = "ran"
    tr["seconds"] = round(time.perf_counter() - started, 3)
    scan.probe = TR.clean(tr)
    return scan.probe


@contextlib.contextmanager
def _restore_threads(n):
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _empty_trace(settings, task, recipe) -> dict:
    return TR.empty(settings, task, recipe)


def _skip(tr, reason: str) -> dict:
    tr["status"], tr["reason"] = "skipped", reason
    return tr


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale / 10:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def _budget(avail, rules) -> float | None:
    """Bytes the probe may use on its device: ``memory_fraction`` of the available memory, capped
    at ``max_memory_bytes`` when that is set; None when neither is known."""
    limits = [avail * rules["memory_fraction"]] if avail is not None else []
    if rules["max_memory_bytes"]:
        limits.append(rules["max_memory_bytes"])
    return min(limits) if limits else None


def _limit(avail, rules) -> str:
    cap = rules["max_memory_bytes"]
    free = f"{_size(avail)} is available" if avail is not None else "free memory is unknown"
    if cap and (avail is None or cap < avail * rules["memory_fraction"]):
        return f"{free} (capped at {_size(cap)} by max_memory_bytes)"
    return f"{free} (limit {rules['memory_fraction']:.0%})"


def _too_big(need, avail, rules, settings) -> str:
    how = "run it on a GPU with --device cuda"
    if settings.train == "all":
        needs = ", which needs accelerate: pip install accelerate" if OF.accelerate_missing() else ""
        how += f", train the heads only with --train heads (the frozen backbone is then offloaded to CPU RAM or disk{needs})"
    return (f"the probe needs about {_size(need)} (weights, gradients, AdamW state, activations) but "
            f"{_limit(avail, rules)} on {settings.device}; {how}, or lower --batch-size/--seq-len")


def _offload_plan(scan, recipe, settings, need, avail, budget, rules):
    """The offload placement for ``--train heads``, or why the probe is skipped (a str)."""
    if OF.accelerate_missing():
        return (f"the probe needs about {_size(need)} but {_limit(avail, rules)} on {settings.device}; "
                "--train heads would offload the frozen backbone with accelerate, which is not installed: "
                "pip install accelerate (or run it on a GPU with --device cuda, or lower --batch-size/--seq-len)")
    ram = M.available_bytes("cpu")
    ram_budget = ram * rules["memory_fraction"] if ram is not None else None
    choices = batches.CHOICES if (recipe.get("task") or settings.task) == "multiple-choice" else 1
    try:
        placement = OF.plan(scan, recipe, settings, budget, ram_budget, scan.config or {}, choices)
    except Exception as e:  # the load problem itself is the load rules' business
        return f"could not build the task model: {type(e).__name__}: {e}".splitlines()[0]
    if isinstance(placement, str):
        return placement
    if placement["resident"] > budget:
        return (f"even with the frozen backbone offloaded to disk, the probe needs about "
                f"{_size(placement['resident'])} (the heads in fp32 with gradients and AdamW state, "
                f"one layer's activations, the largest offloaded layer) but {_limit(avail, rules)} on "
                f"{settings.device}; run it on a GPU with --device cuda, or lower --batch-size/--seq-len")
    return placement


def _memory(scan, recipe, settings):
    """(bytes needed, bytes available), estimated before anything is allocated."""
    module = recipe.get("module")
    if module is not None:
        n = sum(p.numel() for p in module.parameters())
        cfg = getattr(module, "config", None)
        config = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
        copies = 2
    else:
        n = scan.parameters
        config = scan.config or {}
        copies = 1
    new = sum(r.numel for r in scan.records if r.origin == T.NEW)
    trainable = n if settings.train == "all" or not new else new
    choices = batches.CHOICES if (recipe.get("task") or settings.task) == "multiple-choice" else 1
    need = M.estimate_bytes(n, trainable, config, settings.batch_size * choices, settings.seq_len, copies)
    return need, M.available_bytes(settings.device)


def _give_pad(model, task):
    """Sequence classifiers that pool the last token need a pad id to find it (GPT-2 has none).

    Composite configs (Gemma3, LLaVA) keep it in their text config; every read is guarded, and
    the id is set where the model reads it (the text config, and the top level if it has one).
    """
    cfg = inputs.config_of(model)
    if task != "sequence-classification" or cfg is None:
        return
    tcfg = inputs.text_config(cfg)
    try:
        if getattr(tcfg, "pad_token_id", 0) is not None:
            return
        eos = getattr(tcfg, "eos_token_id", None)
        eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
        pad = eos if isinstance(eos, int) and eos < batches.vocab_size(model) else 0
        tcfg.pad_token_id = pad
        if tcfg is not cfg and hasattr(cfg, "pad_token_id"):
            cfg.pad_token_id = pad
    except Exception:  # noqa: BLE001 - a config that refuses the field: the model may not need it
        return


def _give_decoder_start(model):
    """Encoder-decoders shift inputs right from ``decoder_start_token_id``; a T5 config saved
    without one starts from the pad id, as T5 itself does."""
    cfg = inputs.config_of(model)
    if cfg is None or not inputs.cfg_get(cfg, "is_encoder_decoder", False):
        return
    try:
        if getattr(cfg, "decoder_start_token_id", None) is None:
            pad = getattr(cfg, "pad_token_id", None)
            cfg.decoder_start_token_id = pad if isinstance(pad, int) else 0
    except Exception:  # noqa: BLE001
        return


def _expect(tr, model, task, batch, loss_fn):
    """``num_classes`` and ``expected_initial_loss`` (or the reason there is none) in the trace."""
    if loss_fn is not None:  # our own cross-entropy over the model's logits: C = logits' last dim
        tr["num_classes"] = loss_fn.classes
        tr["expected_initial_loss"] = math.log(loss_fn.classes) if loss_fn.classes and loss_fn.classes > 1 else None
        return
    if task is None or inputs.config_of(model) is None:
        tr["expected_initial_loss_reason"] = "the task is unknown: no closed-form loss at init"
        return
    if inputs.wants(model, task):
        classes = inputs.num_classes(model, task, batch)
        tr["num_classes"] = classes
        tr["expected_initial_loss"], tr["expected_initial_loss_reason"] = inputs.expected_loss(
            model, task, classes, tr["head_origin"])
        return
    classes = batches.num_classes(model, task, batch)
    tr["num_classes"] = classes
    if task in batches.CLASSIFY or tr["head_origin"] == "new":
        tr["expected_initial_loss"] = batches.expected_loss(model, task, classes)
    else:
        tr["expected_initial_loss_reason"] = "the LM head was loaded: a pretrained LM is not uninformed on random tokens"


def _rows_for(pixels: int, batch_size: int, rules: dict) -> int:
    """Images per probe batch: ``batch_size``, fewer when the images are large. A ViT-base step on
    8 images of 224x224 costs about 6x a BERT-base step on 8x32 tokens; ``image_pixels_per_batch``
    (2x224x224 by default) keeps an image probe within the text probe's time."""
    budget = rules.get("image_pixels_per_batch") or 0
    if budget <= 0 or pixels <= 0:
        return batch_size
    return max(1, min(batch_size, budget // pixels))


def _image_rows(model, task, batch_size, rules) -> int:
    if task != "image-classification":
        return batch_size
    _, h, w = inputs.image_shape(inputs.config_of(model))
    return _rows_for(h * w, batch_size, rules)


def _batch(model, task, settings, recipe, pack_rules=None, notes=None) -> dict:
    """The probe batch; why the folder's tokenizer or processor was not used goes to ``notes``."""
    pack_rules = pack_rules or {}
    if settings.batch is not None:
        return dict(settings.batch)
    if recipe.get("library") == "timm":
        if settings.data:
            raise InputError(settings.data, "--data is not supported for timm folders yet; omit it for a synthetic image batch")
        from ..taskmodel import _config_json
        from ..timmfolder import input_size, synthetic_batch

        cfg = _config_json(recipe["path"])
        _, h, w = input_size(cfg)
        return synthetic_batch(cfg, _rows_for(h * w, settings.batch_size, pack_rules), settings.seed)
    if inputs.config_of(model) is None:
        raise ValueError("a plain nn.Module has no config to shape a synthetic batch: pass batch={...}")
    media = inputs.wants(model, task)
    trust = bool(recipe.get("trust_remote_code"))
    notes = [] if notes is None else notes
    data = settings.data
    if data and media:
        from .. import hf
        from . import media as MD

        refused = recipe.get("path") and hf.refusal(recipe["path"], "processor", trust)
        if not refused:
            return MD.from_jsonl(data, model, task, settings.batch_size, settings.seq_len, recipe.get("path"), trust)
        notes.append(f"--data not used, synthetic inputs instead: {refused}")
        data = None
    tokenizer = batches.load_tokenizer(recipe.get("path"), trust, notes)
    if data and tokenizer is None and notes:   # the tokenizer was refused: say so, probe on synthetic inputs
        notes[-1] = f"--data not used, synthetic inputs instead: {notes[-1]}"
        data = None
    if data:
        return batches.from_jsonl(data, model, task, settings.batch_size, settings.seq_len, tokenizer)
    if media:
        rows = _image_rows(model, task, settings.batch_size, pack_rules)
        return inputs.synthetic(model, task, rows, settings.seq_len, settings.seed, tokenizer)
    return batches.synthetic(model, task, settings.batch_size, settings.seq_len, settings.seed, tokenizer)


def _head_origin(model, scan, heads, new_names) -> str:
    """"new" when the head's own parameters are new (origin label, or absent from the
    checkpoint so that the model's code initialised them), "loaded" otherwise."""
    own = [n for n, _ in model.named_parameters() if M.in_heads(n, heads)]
    if not own:  # tied to the input embedding (GPT-2's lm_head): pretrained
        return "loaded"
    if set(own) & set(new_names):
        return "new"
    if getattr(scan, "load_report", None):  # transformers matched every head key to the checkpoint,
        return "loaded"                     # under whatever legacy name it was saved (LLaVA's language_model.*)
    return "loaded" if all(n in scan.by_name for n in own) else "new"


_LAYER_SCALE = re.compile(r"(^|\.)(\d+)\.(layer_scale_parameter|layer_scale_?\d|lambda_?\d|gamma_?\d|gamma"
                          r"|(layer_?scale_?\d*|ls\d)\.(lambda1|gamma|scale))$")


def _layer_scales(model, names):
    """``(scales, block_of)`` for the Recorder, or None without layer scales.

    A layer scale (ConvNeXt's ``layer_scale_parameter``, DINOv2's ``layer_scale1.lambda1``, BEiT's
    ``lambda_1``, CaiT's ``gamma_1``) multiplies a residual branch, so every gradient inside the
    branch is that small too: 1e-6 in a fresh ConvNeXt, by design. ``scales``: per block, its
    layer-scale parameters; ``block_of``: per trainable parameter, its block's index (-1 outside
    them, and for the scales themselves).
    """
    blocks = {}
    for n, p in model.named_parameters():
        m = _LAYER_SCALE.search(n)
        if m and p.dim() == 1:
            blocks.setdefault(n[: m.start(2) + len(m.group(2))], []).append(p)
    if not blocks:
        return None
    order = list(blocks)

    def block(n):
        return -1 if _LAYER_SCALE.search(n) else next((i for i, b in enumerate(order) if n.startswith(b + ".")), -1)

    return [blocks[b] for b in order], torch.tensor([block(n) for n in names])


def _sigmoid_head(model) -> bool:
    return inputs.cfg_get(inputs.config_of(model), "problem_type") == "multi_label_classification"


def _checkpoint_names(model, scan) -> dict:
    """Parameter name -> the name the report's tensor table gives it (the checkpoint's)."""
    from ..taskmodel import checkpoint_names

    try:
        return checkpoint_names(model, scan.by_name)
    except Exception:  # noqa: BLE001 - no reverse renames (custom code): the model's own names
        return {n: n for n, _ in model.named_parameters()}


def _fill(tr, model, rec, losses, watch, pack, names):
    """The trace from the recorder; every name in it is the checkpoint's (``names``), as in the
    tensor table, never the in-memory one transformers 5 renamed it to on load."""
    backbone = M.backbone_prefix(model)
    layers = []
    index = []
    for n in rec.names:
        layer = TR.layer_of(names.get(n, n), backbone)
        if layer not in layers:
            layers.append(layer)
        index.append(layers.index(layer))
    index = torch.tensor(index)

    def grouped(norms):
        sq = torch.zeros(len(layers)).index_add_(0, index, torch.nan_to_num(norms, nan=0.0) ** 2)
        return [float(x) for x in sq.sqrt()]

    values = [grouped(norms) for norms in rec.grad_norms]
    grad_norm = {"layers": layers, "values": values}
    if rec.scale_rows:   # IC305 compares blocks with their layer scales taken out
        grad_norm["unscaled"] = [grouped(norms / scale) for norms, scale in zip(rec.grad_norms, rec.scale_rows)]
    ratios = {}
    if rec.update_norms:
        acc = torch.zeros(len(layers))
        for dn, wn in rec.update_norms:
            d = torch.zeros(len(layers)).index_add_(0, index, dn ** 2).sqrt()
            w = torch.zeros(len(layers)).index_add_(0, index, wn ** 2).sqrt()
            acc += d / w
        acc /= len(rec.update_norms)
        ratios = {layer: (float(acc[i]) if math.isfinite(acc[i]) else None) for i, layer in enumerate(layers)}
    trainable = {n: p.numel() for n, p in zip(rec.names, rec.params)}
    dead = [n for n, live in zip(rec.names, rec.live.tolist()) if not live] if rec.grad_norms else []
    # never given a gradient tensor at all, outside the heads: the loss does not depend on them.
    # Either a branch the model computes and drops (a vision tower's post-norm behind
    # vision_feature_layer=-2, wav2vec2's masked_spec_embed outside SpecAugment) or a graph cut
    # (a .detach()); IC304 tells them apart by how much of the model it is (max_unused_fraction)
    heads = tr.get("head_modules") or []
    reached = dict(zip(rec.names, rec.reached.tolist()))
    unused = [n for n in dead if not reached[n] and not M.in_heads(n, heads)]
    body = sum(k for n, k in trainable.items() if not M.in_heads(n, heads))
    # AdamW decays a parameter whose gradient is a zero tensor (not None): it moves with no gradient
    moved = torch.stack([dn for dn, _ in rec.update_norms]).amax(0) if rec.update_norms else torch.zeros(len(rec.names))
    decayed = {n for n, m in zip(rec.names, moved.tolist()) if m > 0}
    unused_fraction = sum(trainable[n] for n in unused) / body if body else 0.0
    trainable = {names.get(n, n): k for n, k in trainable.items()}
    nonfinite = rec.nonfinite and {**rec.nonfinite, "module": TR.module_name(rec.nonfinite["module"], names)}
    spike = pack.rules[SPIKE]
    tr.update({
        "loss": losses,
        "spikes": spike_steps(losses, spike["window"], spike["warmup"], spike["atol"], spike["warn_factor"],
                              spike["early_factor"]),
        "grad_norm": grad_norm,
        "dead_params": _names(dead, names),
        "dead_modules": [{k: g[k] for k in ("module", "params", "numel")} for g in TR.dead_groups(_names(dead, names), trainable)],
        "decay_only_params": _names([n for n in dead if n in decayed], names),
        "unused_params": _names(unused, names),
        "unused_fraction": unused_fraction,
        "activations": _renamed(watch.stats, names),
        "head_modules": list(dict.fromkeys(TR.module_name(h, names) for h in heads)),   # T5's tied lm_head is shared
        "update_ratio": ratios,
        "update_ratio_steps": rec.update_steps,
        "first_nonfinite": nonfinite,
        "trainable_params": sum(trainable.values()),
        "steps_run": len(losses),
        # softmax heads only (IC301): the logits' std s at step 0 (ln C + s^2/2 is their expected loss),
        # and the step-0 loss averaged over every label
        "initial_logit_std": None if _sigmoid_head(model) else rec.logit_std,
        "initial_any_label_loss": None if _sigmoid_head(model) else rec.any_label_loss,
    })
    tr["expected_initial_loss_allowance"] = _allowance(tr, pack.rules["IC301"]["max_logit_std"])


def _allowance(tr, max_std: float):
    """s^2/2 for a softmax head's logits of std s (counted up to ``max_std``): what an uninformed head's
    loss sits above ln C by (ViT-base's 0.02-std head on LayerNorm'd features: s = 0.55, +0.15). IC301
    judges, and the report draws, ln C plus this."""
    s = tr.get("initial_logit_std")
    if tr.get("expected_initial_loss") is None or not isinstance(s, (int, float)) or not math.isfinite(s):
        return None
    return min(s, max_std) ** 2 / 2


def _names(params, names: dict) -> list:
    return [names.get(n, n) for n in params]


def _renamed(stats: dict, names: dict) -> dict:
    """Activation statistics under the checkpoint's module names; two modules that map to one
    name (an MLP and the block around it) keep their own."""
    out = {}
    for m, v in stats.items():
        new = TR.module_name(m, names)
        out[m if new in out else new] = v
    return out
