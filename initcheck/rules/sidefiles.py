"""Weight files beside the model that transformers would not load, and what initcheck made of them."""

from . import rule


@rule("IC215", "separate-weight-file", "info", options=("max_listed",), scope="model")
def separate_weight_file(ctx):
    """A weight file beside the model that could not be related to the backbone as its head.

    ## What it does
    `from_pretrained` opens only `model.safetensors` (or its shards, or `pytorch_model.bin`);
    vendors often ship more beside it: `model.vlm.save_pretrained(dir)` plus
    `torch.save(model.score_head.state_dict(), dir / "score_head.pt")`. initcheck reads every
    top-level weight file (safetensors, or a pickle holding a state dict of tensors, read by its
    own restricted reader; never training state such as `optimizer.pt`), names its tensors
    `FILE:KEY` (`score_head.pt:0.weight`) and judges them with every rule.

    A file whose first layer takes the backbone's hidden size (config.json's `hidden_size`,
    `text_config.hidden_size` for VLMs, or the width of the backbone's norms) is its head: origin
    `head`, judged against the standard inits (transformers' normal(0, initializer_range),
    PyTorch's default, Xavier, He); nothing is reported here. This rule says, once per file, when
    that relation could not be made:
    - a file with embeddings or repeated blocks (an extra shard not in the index, a second copy of
      a backbone): judged as pretrained weights;
    - any other file (no first layer of the hidden size): judged against the fan-based inits alone.

    Harmless look-alike: the same weights in two formats (timm's `pytorch_model.bin` beside
    `model.safetensors`, same tensor names and shapes) are read once, and the file table says so.

    ## Why is this bad?
    It is not in itself: the finding says how the file was judged. A head file that cannot be
    related to the backbone may belong to another model, or sit on features of another width
    (two poolings concatenated); its scale is then judged without the backbone's conventions.

    ## Example
    `extra.safetensors: separate weight file, not related to the backbone (input widths 48; hidden
    size 64 (config.json hidden_size)), 4 tensor(s) (extra.safetensors:0.bias, ...): judged as a
    head initialised by the vendor's code, against the fan-based inits`.

    ## Use instead
    Nothing to change when the file is expected. Name its tensors with `--head "FILE:*"` to
    judge them as new layers.

    ## Options
    - `max_listed`: how many tensor names each finding lists.
    """
    n = ctx.opt("max_listed")
    for side in ctx.scan.facts.get("side_weights") or ():
        if side["relation"] == "head":
            continue
        names = side["tensors"]
        listed = ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
        how = ("judged as pretrained weights" if side["relation"] == "pretrained"
               else "judged as a head initialised by the vendor's code, against the fan-based inits")
        f = ctx.finding(None, f"{side['file']}: {side['detail'].replace(' ' + side['file'], '')}, {len(names)} tensor(s) ({listed}): {how}",
                        value=len(names))
        f.file = side["file"]
        yield f
