"""The probe: a short instrumented fine-tune of a copy of the task model, recorded as a trace.

``run_probe(scan, settings)`` fills ``scan.probe`` (the JSON trace under ``probe``); the rules in
``initcheck/rules/probe.py`` (IC300-IC399) judge it. Measuring and judging stay apart: this
package never decides what is wrong.
"""


def run_probe(scan, settings, pack=None, on_step=None) -> dict:
    """Run the probe and store its trace in ``scan.probe``; see ``initcheck.probe.run.run_probe``."""
    from .run import run_probe as _run  # torch is imported only when a probe actually runs

    return _run(scan, settings, pack, on_step=on_step)
