"""The engine's own finding: a rule that crashed."""

from . import rule


@rule("IC001", "internal-error", "error", scope="model")
def internal_error(ctx):
    """A rule crashed while checking this model.

    ## What it does
    Nothing by itself: when any rule raises an exception, the engine records it as this
    finding (with the rule and the tensor it was checking) and carries on with the other rules.

    ## Why is this bad?
    A check that did not run is a check that did not pass. Failing the gate by default is
    safer than a silent green.

    ## Example
    `rule IC104 crashed on head.weight: ValueError: ...`

    ## Use instead
    Report the message to the initcheck maintainers; meanwhile `--ignore` the crashing rule
    (or lower this rule's severity in a pack) if you must pass the gate.
    """
    return ()
