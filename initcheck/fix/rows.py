"""Remedy 2: vocabulary rows that never trained, or were added at the wrong scale, become the mean of the
rows left as they are plus tiny noise, as transformers' mean resizing does.

The rows are the ones the check names, read from its facts, never guessed again here:

- IC702 (and IC703 for ``--data``): the used tokens whose row is zero, tiny or shared in a vocabulary
  matrix (``scan.facts["vocab"]["tokens"]``). Untrained rows nothing uses (Llama 3's reserved tokens),
  trained rows and rows already at the mean are not named there, so they are never touched;
- IC206: the trailing block of added rows (``addedrows.pack_block`` with the pack's IC206 options),
  or with ``--base`` the rows past the base's (``rec.new_rows_from``).

Each matrix (input embedding, untied LM head) is remedied on its own: the reference is every row of
that matrix the fix does not rewrite (transformers takes the old rows, untrained ones included), so a
rewritten row sits exactly at the mean of all rows afterwards, which is what IC702 reads as
mean-initialised. Ids past the rows (IC701) need a resize, which would change a shape: not done here.
"""

from .. import tensors as T
from ..tensors.addedrows import pack_block, row_profile, vocab_matrix
from .remedy import Step, Unfixable

# transformers' _init_added_embeddings_weights_with_mean: new rows ~ N(mean, NOISE_SCALE * covariance);
# its constant, copied so that a fixed row is what resize_token_embeddings would have drawn
NOISE_SCALE = 1e-9
_KINDS = ("zero", "tiny", "shared")   # the row kinds IC702 / IC703 list ("added" is IC206's, "past" IC701's)
_WHAT = {"IC702": "untrained row(s) of tokens training uses", "IC703": "untrained row(s) of tokens --data uses",
         "IC206": "added row(s) off the others' scale"}
_MINE = ("IC702", "IC703", "IC206", "IC701", "IC104")   # findings on a vocabulary matrix its rows explain
_LISTED = 6                           # row ranges the remedy text names before "and N more"
_CHUNK = 8192                         # rows per pass when summing a large matrix


def plan(scan, report, settings) -> list:
    """Steps (one per matrix) that mean-initialise the rows IC702, IC703 and IC206 name, or
    Unfixables for rows no row rewrite can help (ids past the table, a matrix with non-finite values)."""
    wanted = {}      # matrix name -> {rule: set(rows)}
    out = []
    for f in report.findings:
        if not f.active or not f.param:
            continue
        if f.rule in ("IC702", "IC703"):
            rows = _token_rows(scan, f.param, f.rule)
            if rows:
                wanted.setdefault(f.param, {}).setdefault(f.rule, set()).update(rows)
            if f.rule == "IC703" and _past_rows(scan, f.param):
                out.append(Unfixable(f.param, f.rule, "--data uses ids past this matrix's rows: resize the "
                                                      "embedding (resize_token_embeddings) and save it again"))
        elif f.rule == "IC206":
            rec = scan.by_name.get(f.param)
            if rec is None or not vocab_matrix(rec, scan.config):   # grown position tables: not a vocabulary
                out.append(Unfixable(f.param, f.rule, "added rows of a table that is not a vocabulary (positions, "
                                                      "segments): no mean of token rows fits them"))
                continue
            rows = _added_rows(scan, report, f.param)
            if rows:
                wanted.setdefault(f.param, {}).setdefault(f.rule, set()).update(rows)
        elif f.rule == "IC701" and f.param:
            out.append(Unfixable(f.param, f.rule, "the tokenizer has ids past this matrix's rows: resize the "
                                                  "embedding (resize_token_embeddings) and save it again"))
    # a matrix off as a whole (x100: IC110; NaN: IC101): its mean is off too, and a pretrained weight that is
    # off is reloaded from its source, never re-drawn
    off = {}
    for f in report.findings:
        if f.active and f.param in wanted and f.severity in ("error", "warning") and f.rule not in _MINE:
            off.setdefault(f.param, f.rule)
    for name, by_rule in wanted.items():
        rec = scan.by_name.get(name)
        if rec is None or len(rec.shape) != 2:
            continue
        if name in off or (rec.stats is not None and rec.stats.nonfinite):
            why = f"this matrix is off as a whole ({off.get(name, 'IC101')})"
            for rule in by_rule:
                out.append(Unfixable(name, rule, f"{why}: its mean would be too: not fixable here: reload from the source"))
            continue
        rewritten = sorted(set().union(*by_rule.values()))
        reference = rec.shape[0] - len(rewritten)
        if reference < 1:
            continue
        # one step per matrix (the framework lets one step claim a tensor), under the rule that named most
        rule = max(by_rule, key=lambda r: (len(by_rule[r]), r))
        what = "; ".join(f"{len(by_rule[r])} {_WHAT[r]}, {r}" for r in sorted(by_rule))
        out.append(Step(names=(name,), rule=rule, rows=rewritten,
                        remedy=f"rows {_ranges(rewritten)} ({what}) set to the mean of the {reference:,} rows left as "
                               f"they are + N(0, {NOISE_SCALE:g} x their covariance) noise, as transformers' "
                               f"mean_resizing (_init_added_embeddings_weights_with_mean)",
                        apply=_mean_rows(name, rewritten)))
    return out


def _ranges(rows: list) -> str:
    """``[101, 102, 300, ..., 319]`` -> ``"101-102, 300-319"`` (sorted rows; at most _LISTED ranges named)."""
    spans = []
    for r in rows:
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:_LISTED]]
    return ", ".join(text) + (f" and {len(spans) - _LISTED} more" if len(spans) > _LISTED else "")


def _token_rows(scan, matrix: str, rule: str) -> list:
    """Row ids of the tokens ``rule`` lists for ``matrix``: as IC702 (template / special uses) or IC703
    (``--data`` only) select them, rows zero, tiny or shared there."""
    rows = []
    for t in (scan.facts.get("vocab") or {}).get("tokens") or ():
        used = set(t.get("used_by") or ())
        mine = (used - {"data"}) if rule == "IC702" else (used == {"data"})
        if not mine or t.get("placeholder") or not t.get("untrained"):
            continue
        if (t["rows"].get(matrix) or {}).get("kind") in _KINDS:
            rows.append(int(t["id"]))
    return rows


def _past_rows(scan, matrix: str) -> bool:
    return any(t.get("used_by") == ["data"] and (t["rows"].get(matrix) or {}).get("kind") == "past"
               for t in (scan.facts.get("vocab") or {}).get("tokens") or ())


def _added_rows(scan, report, name: str) -> list:
    """The rows IC206 reported for ``name``: past ``--base``'s rows, or the trailing block it found."""
    rec = scan.by_name.get(name)
    if rec is None or rec.stats is None:
        return []
    if rec.origin == T.RESIZED and rec.new_rows_from is not None:
        return list(range(rec.new_rows_from, rec.shape[0]))
    profile = row_profile(rec.stats)
    if profile is None:
        return []
    block = pack_block(*profile, report.pack.rules.get("IC206", {}))
    return [] if block is None else list(range(block.start, rec.shape[0]))


def _mean_rows(name: str, rows: list):
    """``apply`` for one matrix: ``rows`` <- mean of the other rows + N(0, NOISE_SCALE x their covariance)."""

    def apply(tensors, generator):
        import torch  # here, not at import: the static check never needs torch

        w = tensors[name]
        x = w.reshape(w.shape[0], -1)
        keep = torch.ones(x.shape[0], dtype=torch.bool)
        keep[rows] = False
        mean, cov = _mean_cov(x, keep)
        new = mean.expand(len(rows), -1).clone()
        try:   # transformers samples only where the scaled covariance is positive definite, else the mean alone
            chol = torch.linalg.cholesky(NOISE_SCALE * cov)
        except RuntimeError:
            chol = None
        if chol is not None:
            z = torch.randn(len(rows), x.shape[1], generator=generator, dtype=torch.float64)
            new += z @ chol.T
        out = w.clone()
        out.reshape(w.shape[0], -1)[rows] = new.to(w.dtype)
        return {name: out}

    return apply


def _mean_cov(x, keep):
    """Mean and covariance (population, as transformers divides by the row count) of the rows ``keep``
    marks, a chunk of rows at a time (a 150k-row table is not copied whole): products in float32 as
    transformers computes them (2.3x faster than float64 on a Qwen2-size table), sums in float64."""
    import torch

    n = int(keep.sum())
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    outer = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for a in range(0, x.shape[0], _CHUNK):
        part = x[a:a + _CHUNK][keep[a:a + _CHUNK]].to(torch.float32)
        total += part.sum(0, dtype=torch.float64)
        outer += (part.T @ part).double()
    mean = total / n
    return mean, outer / n - torch.outer(mean, mean)
