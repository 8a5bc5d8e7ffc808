"""The pipeline, one direction: loader -> tensors with context -> rules -> findings -> Report.

``check(target, **options)`` is the Python API; the CLI is a thin wrapper around ``run``.
"""

import contextlib
import dataclasses
import os

from . import scan as scan_mod
from .config import Settings, settings_from
from .engine import check_selectors, run_rules, select_rules
from .loader import open_checkpoint
from .loader.sha256 import sha256_file
from .packs import pack_for
from .result import Report


def check(target, **options) -> Report:
    """Check a fine-tune's starting point.

    Args:
        target: a model folder, a checkpoint file, or an in-memory ``torch.nn.Module``.
        **options: any field of ``initcheck.config.Settings``, e.g. ``rules="strict"``,
            ``select=["IC1"]``, ``fail_on="warning"``, ``task="sequence-classification"``,
            ``num_labels=3``, ``base=path``, ``heads=["head.*"]``, ``probe=False``.
            ``pretrained=path`` is an alias of ``base``.

    Returns:
        Report: with ``.passed``, ``.findings``, ``.to_json()`` and ``.write_html(path)``.

    Example:
        >>> report = initcheck.check("runs/bert-start", task="sequence-classification", num_labels=3)
        >>> report.passed
        True
    """
    if "pretrained" in options:
        options["base"] = options.pop("pretrained")
    return run(target, settings_from(**options))


def run(target, settings: Settings) -> Report:
    if settings.progress is True:  # API: the CLI's terminal display, for this run
        from .report.progress import RichProgress

        settings = dataclasses.replace(settings, progress=RichProgress())
        try:
            return run(target, settings)
        finally:
            settings.progress.close()
    pack = pack_for(settings)
    check_selectors(settings.select, "--select")
    check_selectors(settings.ignore, "--ignore")
    rules = select_rules(pack, settings.select, settings.ignore)
    from .loader.remote import is_url

    if is_url(target) or is_url(settings.base):   # object storage: mirrored, then checked as a folder
        from .loader.remote_run import run_remote

        return run_remote(target, settings, pack, run)
    run_folder = None
    if _is_module(target):
        from .loader.module import scan_module

        scan = scan_module(target, pack, settings)
    elif (run_folder := _find_run(target)) is not None:
        scan = scan_run(run_folder, pack, settings)
    else:
        scan = scan_path(target, pack, settings)
    blocked = (scan.facts.get("vocab") or {}).get("probe_blocked")   # --data the head cannot take (IC703)
    # a post-mortem judges the run's own log; the probe is for starting points (--probe forces it)
    if (run_folder is None or settings.probe is True) and _probe_wanted(settings, scan, pack):
        if blocked:   # skipped with the reason (IC300) rather than crashing on the first batch
            from .probe.trace import skipped

            scan.probe = skipped(settings, (scan.facts.get("task_model") or {}).get("task"),
                                 scan.facts.get("task_model") or {}, blocked)
        else:
            from .probe import run_probe

            _phase(settings, "probe: building the task model and training")
            run_probe(scan, settings, pack, on_step=getattr(settings.progress, "step", None))
    elif scan.facts.get("task_model_error"):  # --no-probe: the failed build is still said (IC300)
        from .probe.trace import skipped

        scan.probe = skipped(settings, (scan.facts.get("task_model") or {}).get("task"),
                             scan.facts.get("task_model") or {}, scan.facts["task_model_error"])
    _phase(settings, "running the rules")
    findings = run_rules(scan, pack, rules)
    from .policy import apply_policy

    findings = apply_policy(findings, scan, settings, pack=pack, rules=rules)
    return _Report(scan, findings, settings, pack, rules)


class _Report(Report):
    """``Report`` with the post-mortem's measurements as the JSON's ``run`` key (null for a model folder), and
    the tokenizer's (``initcheck.vocab``) as its ``vocab`` key (null for an in-memory model)."""

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["run"] = self.scan.facts.get("run")
        out["vocab"] = self.scan.facts.get("vocab")
        if getattr(self, "remote_paths", None):   # a URL's check: no staging path in the report
            from .loader.remote_run import unstage

            out = unstage(out, self.remote_paths)
        return out


def scan_path(path, pack, settings: Settings):
    """Open, label and measure a checkpoint on disk, streaming one tensor at a time."""
    from . import origins

    _phase(settings, "opening")
    pickle_opts = pack.rules.get("IC401", {})  # pickles importing anything else are not loaded
    from .loader.limits import Limits

    ckpt = open_checkpoint(path, safe_globals=list(pickle_opts.get("safe_globals", [])) + list(pickle_opts.get("allow", [])),
                           limits=Limits.from_scan(pack.scan), side_globals=list(pickle_opts.get("side_file_globals", [])),
                           inert_globals=dict(pickle_opts.get("inert", {})),
                           beside=True)   # score_head.pt beside the model is judged too (issue 30)
    from .loader.remote import annotate

    annotate(ckpt)   # a bucket's objects left unfetched (over remote_fetch_max_bytes, past max_files): said
    from .vocab import start

    tokenizer = start(ckpt.path, pack)   # the tokenizer read, its chat templates compiled, beside the statistics
    records = scan_mod.records_for(ckpt, pack.scan)
    scan = scan_mod.Scan(path=str(path), records=records, config=ckpt.config, checkpoint=ckpt,
                         files=[f.as_dict() for f in ckpt.files + ckpt.other_files])
    origins.assign(scan, settings)
    order = list(range(len(ckpt.entries)))
    if ckpt.all_mapped():   # largest first: the two threads then finish together (mmap'd: any order is free)
        order.sort(key=lambda i: -ckpt.entries[i].numel)
    arrays = (ckpt.array(ckpt.entries[i], lazy=True) for i in order)   # lazy: a sharded DCP tensor is assembled by its measuring thread
    total = sum(f.size for f in ckpt.files)
    bar = (settings.progress.scan(total, len(ckpt.entries)) if hasattr(settings.progress, "scan")
           else contextlib.nullcontext())
    # hashed on a thread while the statistics read the same mmap'd bytes: each byte comes from disk once
    hashing = _start_hashing(scan, ckpt, settings.hash_all) if settings.hashes else None
    with bar as advance:
        scan_mod.compute_stats([scan.records[i] for i in order], arrays, pack.scan, advance)
    # the task model is built when named (--task), or from config.json's architectures when a probe may run
    if settings.task or (scan.config and _probe_enabled(settings, pack)):  # a task model may be built
        _phase(settings, "building the task model (load report)")
    _finish_origins(scan, settings, pack)
    _vocab(scan, pack, settings, tokenizer)   # the tokenizer against the rows (IC70x); no torch import
    if hashing is not None:
        _phase(settings, "hashing files")
        hashing()
    return scan


def _vocab(scan, pack, settings, prepared):
    """``vocab.collect`` on the prepared tokenizer; a bug there is IC707's finding, the weights' stand."""
    from .errors import InputError
    from .vocab import collect

    try:
        facts = collect(scan, pack, settings, prepared.result())
        from .vocab.labels import label_facts

        facts["labels"] = label_facts(scan)   # the panel's; IC705/IC706 judge the same function's result
    except InputError:   # a missing or broken --data file: bad input, exit 2
        raise
    except Exception as e:
        facts = scan.facts.setdefault("vocab", {})
        facts["reason"] = "the tokenizer checks failed"
        facts.setdefault("problems", []).append(
            {"file": "(tokenizer)", "reason": f"the tokenizer checks failed ({type(e).__name__}: {str(e)[:200]}); please report it"})


def _find_run(target):
    from .run import find_run

    return find_run(target) if isinstance(target, (str, os.PathLike)) else None


def scan_run(run_folder, pack, settings: Settings):
    """A training output folder: the static scan of its latest checkpoint, then its log and movement.

    The latest checkpoint is scanned like any model folder (so a head that is still zero is also
    IC102's); ``--base`` is the run's starting point here, compared by the movement scan, not a
    source of origins. The measurements go to ``scan.facts["run"]`` for the IC6xx rules.
    """
    from .run import measure_run

    latest = run_folder.weighted[-1].path if run_folder.weighted else None
    # an adapter run's --base is the model its adapters sit on (IC210 checks them against it), not
    # a starting point of the adapter's own tensors: movement is then measured between checkpoints
    adapter = latest is not None and (latest / "adapter_config.json").is_file()
    plain = dataclasses.replace(settings, base=settings.base if adapter else None, probe=settings.probe is True)
    if latest is not None:
        scan = scan_path(latest, pack, plain)
    else:
        scan = scan_mod.Scan(path=str(run_folder.root), records=[])
    _scan_run_files(scan, run_folder.root, latest, pack)
    moving = dataclasses.replace(settings, base=None) if adapter else settings
    scan.facts["run"] = measure_run(run_folder, scan, moving, pack, phase=lambda name: _phase(settings, name),
                                    adapter_base=settings.base if adapter else None)
    return scan


def _scan_run_files(scan, root, latest, pack):
    """Every file of the run beside the latest checkpoint's own (the root's, every other checkpoint's):
    scanned for pickles like a model folder's side files, so a hostile ``checkpoint-10/optimizer.pt``
    or a root ``evil.pkl`` gets its IC401. Paths are relative to the run folder."""
    from .loader import Checkpoint, scan_folder_files
    from .loader.limits import Limits

    if latest is not None and latest.resolve() == root.resolve():
        return  # the final save at the top: its walk already covered the whole run
    if scan.checkpoint is None:
        scan.checkpoint = Checkpoint(path=root, root=root)
    ckpt, opts = scan.checkpoint, pack.rules.get("IC401", {})
    allowed = [*opts.get("safe_globals", []), *opts.get("allow", []), *opts.get("side_file_globals", [])]
    skip = latest.relative_to(root).as_posix() if latest is not None else ""
    n = len(ckpt.other_files)
    scan_folder_files(ckpt, root, allowed, Limits.from_scan(pack.scan), dict(opts.get("inert", {})), skip=skip)
    scan.files = (scan.files or []) + [f.as_dict() for f in ckpt.other_files[n:]]


def _finish_origins(scan, settings, pack):
    """Build the task model and read its load report; a model that cannot be built is a finding.

    The static findings stand on their own: a failed build (an unknown architecture, a missing
    optional dependency, a config transformers refuses) becomes the probe's skip reason (IC300)
    instead of exit 2. Only bad user input (``--task`` on a bare file) is still an InputError.
    """
    from . import origins
    from .errors import InputError

    try:
        origins.finish(scan, settings, pack.scan, auto_task=_probe_enabled(settings, pack))
    except InputError as e:
        from .taskmodel import BuildError

        if not isinstance(e, BuildError):
            raise
        scan.facts["task_model_error"] = e.problem
    except Exception as e:  # a load-report bug must not hide the static findings
        if not scan.facts.get("task_model"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        scan.facts["task_model_error"] = f"could not read the task model's load report: {type(e).__name__}: {msg[:300]}"


def _hash_files(scan, ckpt, every: bool = False):
    """SHA-256 of the files the check read into ``scan.files``; side files are listed, not hashed (an
    optimizer.pt is 2x the model), unless ``every`` (an attestation names every file: ``Settings.hash_all``)."""
    from .loader import _inside

    read = {f.path for f in ckpt.files}
    digests = {}
    for f in scan.files:
        if not every and f["path"] not in read:
            continue
        digests[f["path"]] = sha256_file(_inside(ckpt.root, f["path"]) if every else ckpt.root / f["path"])  # never outside the folder
    return digests




def _start_hashing(scan, ckpt, every: bool = False):
    """Run ``_hash_files`` on a thread; returns ``finish()``, which waits, re-raises its error, and sets
    each ``sha256`` in ``scan.files`` (set there only then: the scan reads that table meanwhile)."""
    import threading

    out = {}

    def work():
        try:
            out["digests"] = _hash_files(scan, ckpt, every)
        except BaseException as e:  # noqa: BLE001 - handed to finish(), raised on the caller's thread
            out["error"] = e

    thread = threading.Thread(target=work, name="initcheck-hash", daemon=True)
    thread.start()

    def finish():
        thread.join()
        if "error" in out:
            if isinstance(out["error"], OSError):
                from .errors import InputError

                raise InputError(out["error"].filename, f"cannot be hashed: {out['error'].strerror}")
            raise out["error"]
        for f in scan.files:
            if f["path"] in out["digests"]:
                f["sha256"] = out["digests"][f["path"]]

    return finish


def _phase(settings: Settings, name: str):
    """Tell a progress observer (``initcheck.report.progress``) that a phase starts."""
    if hasattr(settings.progress, "phase"):
        settings.progress.phase(name)


def _is_module(target) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(target, torch.nn.Module)


def _probe_enabled(settings: Settings, pack=None) -> bool:
    """Not switched off by --no-probe or by the pack (e.g. ``ci``)."""
    return not (settings.probe is False or (settings.probe is None and pack is not None and pack.probe is False))


def _probe_wanted(settings: Settings, scan, pack=None) -> bool:
    if not _probe_enabled(settings, pack):
        return False
    return settings.probe is True or scan.facts.get("task_model") is not None
