"""Post-mortem of a training run: recognise its folder, read its log, measure how far each tensor moved.

Measured here, judged in ``initcheck/rules/run.py`` (IC6xx). ``measure_run`` fills the plain dict
that the JSON report carries as its ``run`` key.
"""

from .detect import RunFolder, find_run
from .measure import measure_run

__all__ = ["RunFolder", "find_run", "measure_run"]
