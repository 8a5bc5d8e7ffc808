"""Post-mortem of a training run: recognise its folder, read its log, measure how far each tensor moved.

Measured here, judged in ``initcheck/rules/run.py`` (IC6xx). ``measure_run`` fills the plain dict
that the JSON report carries as its ``run`` key.
"""

from .detect import RunFolder, find_run

__all__ = ["RunFolder", "find_run", "measure_run"]


def __getattr__(name):
    # every check asks find_run whether its target is a run; only a run needs the measuring code
    if name == "measure_run":
        from .measure import measure_run

        return measure_run
    raise AttributeError(name)
