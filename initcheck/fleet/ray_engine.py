"""``--ray [ADDRESS]``: each member is a Ray task asking for ``num_cpus``, ``memory`` and, when the
probe runs on CUDA, ``num_gpus``. ``ray.init()`` with no address starts a local cluster, so the
same command runs on a laptop and on a cluster (``--ray auto`` or ``--ray ray://head:10001``).

Ray retries a task whose worker died (a lost node, a killed worker) once (``max_retries``); a
member whose own check process died is resubmitted once by the driver. Member paths must be
readable at the same path on every node (shared storage); the reports come back as task results.
"""

import os
import re
import signal
import time

from .member import CRASHED, run_member

_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.-]+:\d+)$")


def looks_like_address(value: str) -> bool:
    """Whether ``--ray VALUE`` names a cluster (auto, local, ray://host:port, host:port) rather than
    being the first SOURCE that click took as the option's optional value."""
    return bool(_ADDRESS.match(value or ""))


def _task(spec: dict) -> dict:
    """The Ray task: one member. ``kill-task:GLOB`` (test hook) kills this Ray worker itself."""
    import fnmatch

    for fault in (spec.get("fault") or "-").split(","):
        if fault.startswith("kill-task:") and \
                fnmatch.fnmatch(os.path.basename(spec["target"].rstrip("/")), fault.split(":", 1)[1]):
            os.kill(os.getpid(), signal.SIGKILL)
    return run_member(spec)


def run_ray(specs: list, address, jobs: int | None, retries: int, gpu: bool, on_result) -> dict:
    """Check every spec as a Ray task; ``on_result(spec, result)`` as each finishes.

    Uses the Ray session this process already has (a test's ``ray.init``), or starts one: a local
    cluster for ``address`` None or "local" (``jobs`` CPUs when given), else connects to it.

    Returns:
        dict: start-up seconds and the cluster's resources, for the summary and the benchmark.
    """
    try:
        import ray
    except ImportError:
        from ..errors import InputError

        raise InputError(None, "--ray needs Ray: pip install 'initcheck[ray]'") from None
    started = time.monotonic()
    ours = not ray.is_initialized()
    if ours:
        local = address in (None, "", "local")
        ray.init(address=None if local else address, num_cpus=jobs if local else None,
                 include_dashboard=False, log_to_driver=False)
    try:
        info = {"startup_seconds": round(time.monotonic() - started, 2), "resources": ray.cluster_resources()}
        remote = ray.remote(max_retries=retries)(_task)
        node_memory = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        pending = {}

        def submit(spec):
            opts = {"num_cpus": 1}
            if node_memory:   # a request beyond every node would wait forever: capped at the largest node
                opts["memory"] = int(min(spec["bytes"], node_memory))
            if gpu and spec.get("probe"):
                opts["num_gpus"] = 1
            pending[remote.options(**opts).remote(spec)] = spec

        for spec in specs:
            submit(spec)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - WorkerCrashedError, NodeDiedError, OOM: the member failed
                    result = {"status": CRASHED, "exit_code": None, "seconds": 0.0, "json": None, "html": None,
                              "reason": _ray_reason(e, retries), "ray_retried": True}
                if result["status"] == CRASHED and not (result.get("ray_retried") or result.get("final")) \
                        and spec["attempt"] <= retries:
                    submit({**spec, "attempt": spec["attempt"] + 1})
                    continue
                on_result(spec, result)
        return info
    finally:
        if ours:
            ray.shutdown()


def _ray_reason(e: Exception, retries: int) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"the Ray task failed after {retries + 1} attempt(s): {type(e).__name__}: {first}"[:400]
