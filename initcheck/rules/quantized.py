"""Quantized weights: recognised, and said to be outside the float checks, never skipped silently."""

from .. import tensors as T
from . import rule


@rule("IC109", "quantized-weights", "info", scope="model")
def quantized_weights(ctx):
    """Quantized tensors that the float weight checks do not judge.

    ## What it does
    Recognises quantized layers by their layout: GPTQ and AWQ (`qweight`, `qzeros`, `scales`,
    `g_idx`), bitsandbytes 4-bit (a uint8 `weight` with `weight.absmax`, `weight.quant_map`,
    `weight.quant_state.*`) and 8-bit (`weight` int8 with `SCB`), compressed-tensors
    (`weight_packed`, `weight_zero_point`), torch.ao quantized modules (`scale`, `zero_point`
    beside `_packed_params`, e.g. `quantize_dynamic` output), and any int8 / uint8 matrix (an int8
    embedding table).
    Reports them once, as info: the zero, scale and symmetry rules read float weights and do not
    judge packed integers. Their float parts (`scales`, `absmax`) are still checked for NaN and
    Inf (IC101), and they count as parameters.

    Harmless look-alikes: integer buffers (`position_ids`, `num_batches_tracked`, token type
    ids) and uint8 causal masks (`attn.bias`) stay buffers and are not reported.

    ## Why is this bad?
    It is not: the finding says what was not checked, so a quantized checkpoint is never
    passed as if every tensor had been judged.

    ## Example
    A GPTQ 4-bit Llama: `model.layers.0.self_attn.q_proj.qweight` (int32) and its `scales`.

    ## Use instead
    Check the float checkpoint the quantized one was made from, before quantizing.
    """
    quant = [r for r in ctx.scan.records if r.role == T.QUANTIZED]
    if not quant:
        return
    # a top-level table is its own layer; torch.ao's packed weights belong to the module around them
    layers = sorted({(r.module or r.name).split("._packed_params")[0] for r in quant})
    kinds = sorted({_kind(r) for r in quant} - {""})
    example = ", ".join(layers[:3]) + (", ..." if len(layers) > 3 else "")
    yield ctx.finding(None, f"{len(quant)} quantized tensor(s) in {len(layers)} layer(s) ({', '.join(kinds) or 'integer weights'}; "
                            f"e.g. {example}) are not judged by the zero, scale and symmetry rules; their float "
                            f"scales are still checked for NaN/Inf",
                      value=len(quant), expected=0)


def _kind(rec) -> str:
    leaf = rec.leaf
    if leaf in ("qweight", "qzeros", "g_idx"):
        return "GPTQ/AWQ packed int4"
    if ".weight." in rec.name or leaf == "SCB":
        return "bitsandbytes"
    if leaf in ("scale", "zero_point"):
        return "torch.ao quantized modules"
    if leaf.startswith("weight_"):
        return "compressed-tensors"
    if rec.dtype in ("int8", "uint8"):
        return f"{rec.dtype} matrices"
    return ""
