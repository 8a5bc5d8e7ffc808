"""An in-memory ``torch.nn.Module`` as a scan: the model the training script is about to train.

Read-only: parameters are read through ``detach()`` (copied to the CPU when they live on a
GPU), nothing is called on the module, and its training mode is restored on the way out.
"""

import sys

from .. import tensors as T
from ..dtypes import torch_to_numpy
from ..errors import InputError
from ..scan import Scan
from ..tensors.stats import compute

FILE = "<module>"

# class-name suffix -> task (the probe builds its loss from the task)
_TASKS = (
    ("ForSequenceClassification", "sequence-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
    ("ForMaskedLM", "masked-lm"),
    ("ForConditionalGeneration", "seq2seq-lm"),
    ("ForSeq2SeqLM", "seq2seq-lm"),
    ("ForImageClassification", "image-classification"),
    ("ForImageClassificationWithTeacher", "image-classification"),
    ("ForAudioClassification", "audio-classification"),
    ("ForCTC", "ctc"),
    ("ForVisionText2Text", "image-text-to-text"),
)


def guess_task(module) -> str | None:
    """The task of a transformers task model: the auto mapping that names its class for its
    ``model_type`` (Wav2Vec2ForSequenceClassification is audio, Gemma3ForConditionalGeneration
    image-text-to-text), else its class-name suffix; None for anything else."""
    name = type(module).__name__
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    if isinstance(model_type, str) and "transformers" in sys.modules:  # a transformers model: already imported
        try:
            from ..taskmodel import detect_task

            task = detect_task(model_type, name)
        except Exception:  # noqa: BLE001 - an old transformers without a mapping: the suffix decides
            task = None
        if task:
            return task
    for suffix, task in _TASKS:
        if name.endswith(suffix):
            return task
    return None


def scan_module(module, pack, settings) -> Scan:
    """Build a Scan from ``module.named_parameters()`` plus its float buffers.

    Args:
        module: the model (any ``torch.nn.Module``; transformers models give their config).
        pack: the resolved rule pack (its ``[scan]`` options drive the statistics).
        settings: ``Settings``; ``task``, ``heads`` and ``base`` label what is new.

    Raises:
        InputError: a parameter is not materialised (meta device).
    """
    was_training = module.training
    try:
        tensors = _tensors(module)
        records, arrays = [], {}
        for name, t, is_buffer in tensors:
            raw, dtype = torch_to_numpy(t)
            rec = T.make_record(name, tuple(t.shape), dtype, FILE)
            if is_buffer:
                rec.role = T.BUFFER
            records.append(rec)
            arrays[name] = raw
        owner, config = _config(module)
        # roles and 1+w norms (Gemma's start at zero) known from the module classes themselves
        facts = T.module_facts(module)
        T.structural_roles(records, facts.norms, facts.conv_groups)
        T.mark_offset_norms(records, config, pack.scan.get("one_plus_w_model_types", ()),
                            offset_names=facts.offset_gains)
        scan = Scan(path=f"<{type(module).__name__}>", records=records, config=config)
        scan.facts["task_model"] = {"module": module, "task": settings.task or guess_task(module)}
        if owner:
            scan.facts["config_from"] = owner
        _label_origins(scan, module, settings, arrays)
        for rec in records:
            rec.stats = compute(rec, arrays[rec.name], pack.scan)
        return scan
    finally:
        module.train(was_training)


def _tensors(module) -> list:
    out = []
    for name, p in module.named_parameters():
        _materialised(name, p)
        out.append((name, p, False))
    for name, b in module.named_buffers():
        if b is not None and b.is_floating_point():
            _materialised(name, b)
            out.append((name, b, True))
    return out


def _materialised(name, t):
    if t.device.type == "meta":
        raise InputError(FILE, f"{name} is on the meta device (not materialised): load the weights before checking")


def _config(module):
    """``(submodule name, config dict)`` from the module or its first transformers submodule."""
    for name, m in module.named_modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            try:
                return name, cfg.to_dict()
            except Exception:  # noqa: BLE001 - an odd config must not stop the check
                return name, None
    return None, None


def _label_origins(scan, module, settings, arrays):
    """Mark parameters outside the pretrained submodule as new, then apply --head / --base labels."""
    pretrained = _pretrained_prefix(module)
    if pretrained:
        for rec in scan.records:
            if rec.role != T.BUFFER and not rec.name.startswith(pretrained + "."):
                rec.origin = T.NEW
                rec.origin_detail = f"outside the pretrained submodule {pretrained!r}"
    from ..origins import apply_user_labels

    apply_user_labels(scan, settings, lambda rec: arrays[rec.name])


def _pretrained_prefix(module) -> str | None:
    """For a custom wrapper (``nn.Module`` holding a transformers model plus a head), the wrapped model's name."""
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return None
    if isinstance(module, PreTrainedModel):
        return None
    for name, m in module.named_modules():
        if name and isinstance(m, PreTrainedModel):
            return name
    return None
