"""Weight files beside the model (``score_head.pt`` next to ``model.safetensors``), related to the
backbone by shape and labelled.

A vendor who wraps a backbone in their own module often ships ``backbone.save_pretrained(dir)``
plus ``torch.save(head.state_dict(), dir / "score_head.pt")``. transformers never opens the head
file; the loader reads it anyway (``Checkpoint.side_weights``, tensors named ``FILE:KEY``), and here
each such file is related to the backbone:

- a **head file**: no embedding, no repeated block, and a first layer (a linear layer that no other
  layer of the file feeds) whose input width is the backbone's hidden size (config.json's
  ``hidden_size``, ``text_config.hidden_size`` for VLMs, ...; without a config, the width of the
  backbone's norms and embeddings). Its tensors are a stored head, initialised by the vendor's
  code: judged against the band of the standard inits (PyTorch default, Xavier, He) widened to the
  backbone's ``initializer_range`` (``heads.reference_std``);
- a file with an embedding or repeated blocks (an extra shard, a second copy of a backbone):
  pretrained weights, judged as such;
- anything else: judged like a head initialised by the vendor's code against the fan-based inits
  alone, since no backbone convention applies.

The last two are said once per file (IC215). ``scan.facts["side_weights"]`` holds the outcome.
"""

from collections import Counter

from . import record as T
from .topology import head_chains

# the width keys configs use for a model's hidden size (timm: num_features), and the sub-configs a
# VLM or audio model nests; CLIP-style models also output projection_dim features
_WIDTH_KEYS = ("hidden_size", "d_model", "n_embd", "embed_dim", "dim", "num_features")
_OUTPUT_KEYS = ("projection_dim",)
_SUB_CONFIGS = ("", "text_config", "vision_config", "audio_config")
# a config without a convention: expected_std then spans the fan-based inits alone
NO_CONVENTION = {"_initcheck": "no backbone convention: fan-based inits"}


def relate_side_files(scan, base_config=None):
    """Label the tensors of every side weight file (see the module docstring).

    Args:
        scan: the scan; ``scan.checkpoint.side_weights`` names the files.
        base_config: ``--base``'s config.json, used when the folder has none.
    """
    ckpt = scan.checkpoint
    files = list(getattr(ckpt, "side_weights", None) or ())
    if not files:
        return
    config = scan.config or base_config
    by_file = {}
    for rec in scan.records:
        by_file.setdefault(rec.file, []).append(rec)
    side = set(files)
    widths = backbone_widths(config, [r for r in scan.records if r.file not in side])
    out = []
    for rel in files:
        recs = [r for r in by_file.get(rel, []) if r.role != T.BUFFER]
        relation, detail = _relate(rel, recs, widths)
        for rec in recs:
            _label(rec, relation, detail, config if config is not scan.config else None)
        out.append({"file": rel, "relation": relation, "detail": detail, "tensors": [r.name for r in recs]})
        _note_file(scan.files, rel, detail)
    scan.facts["side_weights"] = out


def _note_file(files, rel: str, detail: str):
    """The file table says how a side file was judged (its verdict stays "loaded": its tensors were)."""
    for f in files:
        if f.get("path") == rel:
            f["note"] = "; ".join(x for x in (detail.replace(f" {rel}", ""), f.get("note")) if x)


def backbone_widths(config, records) -> list:
    """``[(width, where it was read)]``: the backbone's hidden size, from its config, else measured."""
    out = _config_widths(config if isinstance(config, dict) else {})
    if out:
        return out
    # no config: the backbone's width is the length of its norms and the width of its embeddings
    norms = Counter(r.shape[0] for r in records if r.role == T.NORM_GAIN and len(r.shape) == 1)
    embeds = Counter(r.shape[1] for r in records if r.role == T.EMBEDDING and len(r.shape) == 2)
    for counts, what in ((norms, "the length of most of the backbone's norms"), (embeds, "the backbone's embedding width")):
        if counts:
            out.append((counts.most_common(1)[0][0], f"measured: {what}"))
    return out


def _config_widths(cfg: dict) -> list:
    out = []
    for where in _SUB_CONFIGS:
        sub = cfg.get(where) if where else cfg
        if not isinstance(sub, dict):
            continue
        at = f"config.json {where}." if where else "config.json "
        keys = [k for k in _WIDTH_KEYS if _positive_int(sub.get(k))][:1]   # the first width key it uses
        if not where:
            keys += [k for k in _OUTPUT_KEYS if _positive_int(sub.get(k))]
        out += [(sub[k], at + k) for k in keys]
        sizes = sub.get("hidden_sizes")   # ConvNeXt, ResNet, Swin: the last stage's width is the output
        if isinstance(sizes, list) and sizes and _positive_int(sizes[-1]):
            out.append((sizes[-1], at + "hidden_sizes[-1]"))
    return out


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def first_layers(recs) -> list:
    """The file's linear layers that no other layer of the file feeds (the input side of a head)."""
    links = head_chains(recs)
    return [r for r in recs if r.role == T.LINEAR and len(r.shape) == 2 and r.block is None
            and not links.get(r.name, ([], []))[0]]


def _relate(rel: str, recs, widths) -> tuple:
    """``(relation, detail)``: "head", "pretrained" or "unrelated", and how that was decided."""
    if any(r.role == T.EMBEDDING or r.block is not None for r in recs):
        return "pretrained", f"separate weight file {rel} with embeddings or repeated blocks"
    firsts = first_layers(recs)
    for w, source in widths:
        hit = next((r for r in firsts if r.fan_in == w), None)
        if hit is not None:
            return "head", f"separate head file {rel}, input width {w} = backbone hidden size ({source})"
    seen = ", ".join(str(r.fan_in) for r in firsts[:3]) or "none"
    known = ", ".join(f"{w} ({s})" for w, s in widths[:3]) or "unknown"
    return "unrelated", f"separate weight file {rel}, not related to the backbone (input widths {seen}; hidden size {known})"


def _label(rec, relation: str, detail: str, init_config):
    """Origin and init convention of one tensor of a side file."""
    if rec.origin_detail == "--head":   # named by the user: they win
        return
    if relation == "pretrained":   # trained weights, whatever --base said of their FILE:KEY names
        rec.origin, rec.origin_detail = T.PRETRAINED, detail
        rec.extra.pop("head_found", None)
        return
    rec.origin, rec.origin_detail = T.HEAD, detail
    rec.extra["head_found"] = detail
    rec.extra["custom_head"] = True   # initialised by the vendor's code: the band of standard inits
    if relation == "unrelated":
        rec.extra["init_config"] = NO_CONVENTION
    elif init_config:
        rec.extra["init_config"] = init_config   # --base's config.json stands in for a folder without one
