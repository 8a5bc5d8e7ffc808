"""Check one member in a child process and bring its report back as text.

Both engines call ``run_member``: the pool from a thread, Ray from a task (possibly on another
node, which is why the reports travel back as text instead of being written to OUT_DIR there).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# the statuses of one attempt: the check ran and ended 0/1/2 ("done"), or its process died ("crashed")
DONE, CRASHED = "done", "crashed"


def run_member(spec: dict) -> dict:
    """Run ``initcheck check`` on ``spec["target"]`` with ``spec["argv"]`` in a fresh process.

    Args:
        spec: target, argv (the member options), html (bool), attempt (1, 2, ...), fault (test
            hook, "-" for none), cwd (where the fleet was started: relative paths and the project
            config are found from there, as for ``initcheck check`` alone), revision (or None).

    Returns:
        dict: status (done or crashed), exit_code, seconds, reason (one line, or None), json and
        html (the reports' text, or None), node (the host that ran it), fp (the member's files'
        digests, initcheck.fleet.digest.fingerprint).
    """
    from .digest import fingerprint

    fp = fingerprint(spec["target"])   # here, on the node that reads the member: hashing is spread out too
    out = tempfile.mkdtemp(prefix="initcheck-fleet-")
    try:
        return {**_run(spec, out), "fp": fp}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _run(spec: dict, out: str) -> dict:
    """One attempt, writing the reports into ``out`` and reading them back."""
    json_path, html_path = os.path.join(out, "report.json"), os.path.join(out, "report.html")
    cmd = [sys.executable, "-m", "initcheck.fleet.worker", str(spec["attempt"]), spec.get("fault") or "-", "--",
           "check", spec["target"], *spec["argv"], "-q", "-o", json_path]
    if spec.get("html"):
        cmd += ["-o", html_path]
    if spec.get("revision"):
        cmd += ["--revision", spec["revision"]]
    cwd = spec.get("cwd") if spec.get("cwd") and os.path.isdir(spec["cwd"]) else None
    started = time.monotonic()
    limit = spec.get("timeout") or None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", cwd=cwd, env=_env(spec), check=False,
                           timeout=limit)
    except OSError as e:   # the interpreter could not be started at all: a node problem, retried
        return _result(CRASHED, None, time.monotonic() - started, f"could not start the check: {e.strerror}")
    except subprocess.TimeoutExpired:   # subprocess.run has killed it; a second attempt would hang as long
        return {**_result(CRASHED, None, time.monotonic() - started,
                          f"the check was still running after {limit:g} s and was killed (--timeout)"), "final": True}
    took = time.monotonic() - started
    if p.returncode < 0:
        return _result(CRASHED, None, took, f"the check's process was killed by {_signal(-p.returncode)}"
                                            f"{_oom_hint(-p.returncode)}")
    if p.returncode in (0, 1) and os.path.isfile(json_path):
        return _result(DONE, p.returncode, took, None, _read(json_path), _read(html_path) if spec.get("html") else None)
    if p.returncode == 2:
        return _result(DONE, 2, took, _error_line(p.stderr))
    return _result(CRASHED, None, took, f"the check's process exited {p.returncode} without a report: "
                                        f"{_last_line(p.stderr) or 'no message'}")


def _env(spec: dict) -> dict:
    env = dict(os.environ)
    env.update(spec.get("env") or {})
    return env


def _result(status, code, seconds, reason, report=None, html=None) -> dict:
    return {"status": status, "exit_code": code, "seconds": round(seconds, 3), "reason": reason,
            "json": report, "html": html, "node": os.uname().nodename}


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _signal(n: int) -> str:
    try:
        return f"{signal.Signals(n).name} (signal {n})"
    except ValueError:
        return f"signal {n}"


def _oom_hint(n: int) -> str:
    return "; an out-of-memory kill looks like this" if n == signal.SIGKILL else ""


def _error_line(stderr: str) -> str:
    """The check's own one-line error ("initcheck: error: PATH: problem"), as ``error: PATH: problem``."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("initcheck: error: "):
            return "error: " + line[len("initcheck: error: "):]
    return "error: " + (_last_line(stderr) or "the check exited 2 without a message")


def _last_line(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1][:400] if lines else ""
