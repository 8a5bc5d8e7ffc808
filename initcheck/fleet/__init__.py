"""Fleet audits (issue 27): many checkpoints in one command, on a local process pool or a Ray
cluster, with one summary in OUT_DIR.

Each member is checked by ``initcheck check`` itself, in its own process (initcheck.fleet.worker),
with the same options: its verdict is what the check alone gives it. This package drives those
checks and writes what they return; it adds nothing to the pipeline.

OUT_DIR/
    members/NAME.json (and NAME.html with --html)   each member's report
    fleet.jsonl    one line per member: target, sha256 of its weight files, verdict, counts, top findings, time
    index.html     a sortable table of every member and charts (self-contained)
    fleet.sarif    every member's SARIF run in one log (--sarif)
"""

import os
import re
import time
import zlib
from datetime import UTC, datetime

from .digest import fingerprint, stat_signature
from .estimate import member_bytes, probe_expected
from .index import EXIT, row_for, write_index, write_jsonl, write_sarif
from .knobs import knobs
from .resume import member_path, previous, unchanged


def member_name(member) -> str:
    """A file name for a member's reports: its label made safe, and a checksum of its target so
    that two members called ``model`` never share one."""
    shown = member.label.rstrip("/") if member.kind == "cache" else os.path.basename(member.target.rstrip("/"))
    base = re.sub(r"[^A-Za-z0-9._@-]+", "_", shown.replace("/", "_"))[-60:].strip("._") or "member"
    return f"{base}-{zlib.crc32(os.path.abspath(member.target).encode()):08x}"


def run_fleet(members, out_dir, settings, pack, argv, key, *, html=False, sarif=False, force=False,
              ray_address=None, jobs=None, fault=None, echo=None, timeout=None) -> dict:
    """Check every member, write OUT_DIR, return the summary.

    Args:
        members: from initcheck.fleet.sources.expand.
        settings, pack: the resolved settings and rule pack (for the memory estimate).
        argv: the options each member's ``initcheck check`` gets.
        key: the settings digest (initcheck.fleet.digest.settings_key) that resume compares.
        ray_address: None for the process pool; "local" (start a local Ray cluster) or an address.
        jobs: pool size (default: the cores); with a local Ray cluster, its CPUs.
        fault: test hook (initcheck.fleet.worker), or None.
        timeout: seconds a member's check may run (None: fleet.toml's ``timeout_seconds``; 0: no limit).
        echo: ``echo(line)`` for progress lines, or None.

    Returns:
        dict: exit_code (the worst member's), rows, checked, resumed, failed, wall_seconds, engine.
    """
    say = echo or (lambda line: None)
    started = time.monotonic()
    os.makedirs(os.path.join(out_dir, "members"), exist_ok=True)
    last = {} if force else previous(out_dir)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = jobs or cores
    fraction = knobs()["memory"]["memory_fraction"]
    from ..hf import mem_available

    free = mem_available()
    budget = free * fraction if free is not None else None
    rows, specs, names = {}, [], []
    for m in members:
        name = member_name(m)
        names.append(name)
        stat = stat_signature(m.target)
        carried = unchanged(last.get(member_path(m.target)), m.target, stat, key, out_dir)
        if carried:
            rows[name] = {**carried, "target": m.target, "label": m.label}   # as named this time
            continue
        probe = probe_expected(m.target, settings, pack) and (m.kind != "run" or settings.probe is True)
        env = {}
        if ray_address is None and "OMP_NUM_THREADS" not in os.environ:   # N probes at once share the cores
            env["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
        # a Ray task may run on another node, in another folder: paths there are absolute (shared storage)
        target = os.path.abspath(m.target) if ray_address and os.path.exists(m.target) else m.target
        specs.append({"member": m, "name": name, "stat": stat, "target": target, "revision": m.revision, "argv": argv,
                      "html": html, "attempt": 1, "fault": fault or "-", "cwd": os.getcwd(), "env": env,
                      "timeout": knobs()["run"]["timeout_seconds"] if timeout is None else timeout,
                      "probe": probe, "bytes": member_bytes(m.target, probe, budget)})
    resumed = len(rows)
    write_jsonl(out_dir, [rows[n] for n in names if n in rows])
    engine = (f"Ray ({ray_address})" if ray_address else f"process pool, {jobs} job(s)")
    skipped = f"{resumed} unchanged since the last run in {out_dir}, skipped (--force checks them again); " if resumed else ""
    say(f"fleet: {len(members)} member(s); {skipped}checking {len(specs)} on the {engine}")
    state = {"done": 0, "failed": 0, "t0": time.monotonic()}
    retries = knobs()["run"]["retries"]

    def on_result(spec, result):
        name = spec["name"]
        if result.get("json"):
            _write(os.path.join(out_dir, "members", name + ".json"), result["json"])
        if result.get("html"):
            _write(os.path.join(out_dir, "members", name + ".html"), result["html"])
        fp = result.get("fp") or fingerprint(spec["target"])   # a Ray task that died returned none
        row = {**row_for(spec["member"], name, fp, key, result, spec["attempt"], html), "stat": spec["stat"],
               "path": member_path(spec["target"])}
        rows[name] = row
        with open(os.path.join(out_dir, "fleet.jsonl"), "a", encoding="utf-8") as f:   # streamed as they finish
            import json

            f.write(json.dumps(row, default=str) + "\n")
        state["done"] += 1
        state["failed"] += row["verdict"] == "failed"
        left = len(specs) - state["done"]
        eta = (time.monotonic() - state["t0"]) / state["done"] * left
        what = row["reason"] if row["verdict"] in ("error", "failed") else _counts(row)
        say(f"fleet: {state['done']}/{len(specs)} done, {state['failed']} failed, ETA {_clock(eta)}: "
            f"{row['verdict'].upper()} {spec['member'].label} ({result['seconds']:.1f}s): {what}")

    info = {}
    if specs and ray_address is None:
        from .pool import run_pool

        run_pool(specs, jobs, budget, retries, on_result)
    elif specs:
        from .ray_engine import run_ray

        gpu = str(settings.device).startswith("cuda")
        info = run_ray(specs, ray_address, jobs if ray_address == "local" else None, retries, gpu, on_result)
    ordered = [rows[n] for n in names]
    write_jsonl(out_dir, ordered)
    wall = time.monotonic() - started
    meta = {"engine": engine, "checked": len(specs), "resumed": resumed, "wall_seconds": wall,
            "created": datetime.now(UTC).isoformat(timespec="seconds")}
    write_index(out_dir, ordered, meta)
    if sarif:
        write_sarif(out_dir, ordered)
    counts = {v: sum(1 for r in ordered if r["verdict"] == v) for v in EXIT}
    code = max((EXIT[r["verdict"]] for r in ordered), default=0)
    say(f"fleet: {len(ordered)} member(s): {counts['pass']} pass, {counts['fail']} fail, {counts['error']} error, "
        f"{counts['failed']} failed; {len(specs)} checked, {resumed} skipped unchanged; {wall:.1f} s"
        f"{_startup(info)}; "
        f"{os.path.join(out_dir, 'index.html')}")
    return {"exit_code": code, "rows": ordered, "checked": len(specs), "resumed": resumed,
            "failed": counts["failed"], "wall_seconds": wall, "engine": engine, **info}


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _startup(info: dict) -> str:
    start = info.get("startup_seconds")
    return f" (Ray start-up {start:.1f} s)" if start is not None else ""


def _counts(row) -> str:
    c = row.get("counts") or {}
    top = row["top"][0] if row.get("top") else None
    first = f"; {top['rule']} {top['name']}" if top else ""
    return f"{c.get('error', 0)} error(s), {c.get('warning', 0)} warning(s), {c.get('info', 0)} info{first}"


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
