"""Symmetric neurons: units that compute the same function and so receive the same gradient."""

from .. import tensors as T
from ..tensors.addedrows import vocab_matrix
from ..tensors.topology import head_chains
from ..vocab.rows import vocab_matrices
from . import rule
from .zeros import allowed


@rule("IC104", "symmetric-neurons", "error",
      options=("allow", "near_severity", "pretrained_severity", "output_severity", "mean_tolerance"), scope="model")
def symmetric_neurons(ctx):
    """Rows of a weight matrix that duplicate each other (with equal biases).

    ## What it does
    Finds output units (rows of a linear weight, output channels of a conv) that are exact or
    near duplicates (cosine similarity at or above the pack's `near_duplicate_cosine`), and keeps
    only those whose biases are equal too. Rows are bucketed by random-projection hashes, so a
    128k x 4096 matrix is never compared pairwise.

    Only rows whose equality means equal gradients are compared. Not compared: depthwise and
    grouped convolutions (`[C, 1, k, k]` kernels, or `groups > 1` for a model in memory), where
    each channel reads its own input channels, so two equal filters still get different
    gradients; and rows shorter than `[scan] min_duplicate_row_length` (in_channels x kernel).
    Harmless look-alike: trained 3x3 depthwise filters of MobileNetV2 / EfficientNet-Lite are
    smooth profiles with cosine >= 0.999 between channels; they stay silent, while a duplicated
    row of a normal conv or linear layer (with its bias) still fires.

    Severity: exact duplicates in new layers are errors; near duplicates, and duplicates in
    pretrained weights, are warnings; duplicates in a final projection (rows are classes or
    tokens, which their targets tell apart) are info. Embedding rows are never checked
    (mean-resized vocabulary rows are near-identical by design), nor are an untied LM head's rows
    that sit at the mean of its rows: `resize_token_embeddings(mean_resizing=True)` and
    `initcheck fix` put added or untrained tokens' rows there.

    ## Why is this bad?
    Two units with identical incoming weights and biases produce identical activations and get
    identical gradients: they stay copies of each other forever and the layer is narrower than
    it looks. This is why weights are initialised randomly.

    ## Example
    A head built with `weight.data[:] = weight.data[0]`, or rows copied when a layer was widened.

    ## Use instead
    Re-initialise the layer randomly; when widening a layer, add noise to the copied rows.

    ## Options
    - `allow`: glob patterns of parameter names to skip.
    - `near_severity`: severity when the duplicates are only near (not bitwise) copies.
    - `pretrained_severity`: severity for duplicates in pretrained weights.
    - `output_severity`: severity for duplicates in a final projection.
    - `mean_tolerance`: an LM head row within this share of |mean| of the rows' mean is
      mean-initialised (IC702's test).
    """
    links = None
    heads = None   # the vocabulary matrices, built on first need: their rows at the mean are not duplicates
    for rec in ctx.scan.records:
        st = rec.stats
        if st is None or not st.dup_groups or rec.role not in (T.LINEAR, T.CONV) or allowed(rec.name, ctx.opt("allow")):
            continue
        bias = ctx.scan.by_name.get(rec.module + ".bias")
        bvals = bias.stats.values.reshape(-1) if bias is not None and bias.stats is not None and bias.stats.values is not None else None
        groups = []
        for g in st.dup_groups:
            rows = [r for r in g["rows"] if rec.new_rows_from is None or r < rec.new_rows_from]
            if bvals is not None and len(bvals) == rec.rows:
                rows = [r for r in rows if bvals[r] == bvals[rows[0]]] if rows else rows
            if len(rows) >= 2:
                groups.append((rows, g["exact"], g["size"]))
        if groups and vocab_matrix(rec, ctx.scan.config):
            if heads is None:
                heads = {m.name: m for m in vocab_matrices(ctx.scan, {})}   # no block options: only at_mean is asked
            head = heads.get(rec.name)
            if head is not None:
                groups = [grp for grp in groups if not all(head.at_mean(r, ctx.opt("mean_tolerance")) for r in grp[0])]
        if not groups:
            continue
        exact = any(e for _, e, _ in groups)
        units = sum(size for _, _, size in groups)
        if links is None:
            links = head_chains(ctx.scan.records)
        is_output = rec.block is None and rec.name in links and not links[rec.name][1]
        if is_output:
            severity = ctx.opt("output_severity")
        elif rec.origin == T.PRETRAINED:
            severity = ctx.opt("pretrained_severity")
        elif not exact:
            severity = ctx.opt("near_severity")
        else:
            severity = ctx.severity
        kind = "exact" if exact else "near"
        example = groups[0][0][:4]
        why = (": they start with identical outputs; only their targets tell them apart" if is_output else
               ": they get identical gradients and stay identical")
        yield ctx.finding(
            rec.name,
            f"{units} of {rec.rows} units are {kind} duplicates in {len(groups)} group(s), e.g. rows {example}"
            + (" (biases equal too)" if bvals is not None else "") + why,
            value=units, expected=0, severity=severity)
