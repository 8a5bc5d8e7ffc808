"""The default engine: one child process per member, at most ``jobs`` at a time, bounded in memory.

A small thread pool drives the children (concurrent.futures' ProcessPoolExecutor breaks entirely
when one worker dies: BrokenProcessPool; a child per member isolates a SIGKILL to its member).
"""

import concurrent.futures as cf
from collections import deque

from .member import CRASHED, run_member


def run_pool(specs: list, jobs: int, budget: float | None, retries: int, on_result) -> None:
    """Check every spec; call ``on_result(spec, result)`` in this thread as each one finishes.

    A member starts only while the estimates (``spec["bytes"]``) of the running ones plus its own
    stay within ``budget`` (None: no bound); one that does not fit waits, and a later, smaller one
    may start first. With nothing running, the next member starts whatever its estimate (it
    cannot fit better later; a probe beyond the budget skips itself inside the check). A member
    whose process died is retried ``retries`` times, then reported with the reason.
    """
    pending, running, used = deque(specs), {}, 0
    with cf.ThreadPoolExecutor(max_workers=max(1, jobs)) as threads:
        while pending or running:
            for spec in list(pending):
                if len(running) >= jobs:
                    break
                if running and budget is not None and used + spec["bytes"] > budget:
                    continue
                pending.remove(spec)
                running[threads.submit(run_member, spec)] = spec
                used += spec["bytes"]
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                spec = running.pop(fut)
                used -= spec["bytes"]
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - a bug in the driver side of one member is its result
                    result = {"status": CRASHED, "exit_code": None, "seconds": 0.0, "json": None, "html": None,
                              "reason": f"the fleet could not run this member: {type(e).__name__}: {e}"[:400]}
                if result["status"] == CRASHED and not result.get("final") and spec["attempt"] <= retries:
                    pending.appendleft({**spec, "attempt": spec["attempt"] + 1})
                    continue
                on_result(spec, result)
