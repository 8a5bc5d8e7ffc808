"""Policy findings: about the project's own suppressions, not about the model.

These rules never look at tensors; ``initcheck.policy.apply_policy`` creates their findings
after every other rule has run, because only then is it known what each suppression matched.
"""

from . import rule


@rule("IC501", "unused-suppression", "warning", scope="model")
def unused_suppression(ctx):
    """A suppression in the project config that matched no finding.

    ## What it does
    After the rules have run, checks every `[[tool.initcheck.suppress]]` entry whose rule ran
    in this check and reports the ones that matched no finding. A suppression for a rule
    that did not run (not selected, ignored, disabled by the pack) is not judged.

    ## Why is this bad?
    A suppression outlives the defect it excused: once the head is re-initialised, the entry
    stays and would silently hide the *next* all-zero head in `classifier.*`. Audits also read
    suppressions as statements about the model; a stale one is a false statement.

    ## Example
    ```toml
    [[tool.initcheck.suppress]]
    rule = "all-zero-weights"
    param = "classifier.*"
    reason = "zero head on purpose (re-initialised in train.py)"
    ```
    ... after the checkpoint was re-exported with a properly initialised head.

    ## Use instead
    Delete the suppression (or narrow its `param` glob) once it matches nothing. The `ci`
    pack raises this rule to an error so that stale suppressions fail the gate.

    ## Options
    - `severity`: like every rule; `warning` by default, `error` in the `ci` and `strict` packs.
    """
    return ()
