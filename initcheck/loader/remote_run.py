"""A check whose target or ``--base`` is an object-storage URL: mirror, check, report under the URL.

``run_remote`` stages each URL (``remote.stage``), runs the ordinary pipeline on the staging
folders, and gives the report back in the URL's terms: the target path is the URL, each object's
row in the file table carries its ``url``, ``etag`` and ``version`` (and its ``sha256`` when hashes
are on), and no staging path is left in any string of the report or of an error.
"""

import dataclasses
import hashlib
import os

from ..errors import InputError
from .remote import Mirror, Options, RemoteSafetensors, check_unchanged, is_url, stage
from .sha256 import sha256_file


def run_remote(target, settings, pack, run):
    """``run(target, settings)`` with every URL among the target and ``--base`` mirrored first.

    Args:
        target: a URL or a local path.
        settings: the run's settings (``base`` may be a URL).
        pack: the rule pack (its ``[scan]`` limits and ``remote_*`` keys).
        run: the pipeline (``api.run``) to call on the staged paths.
    """
    from .limits import Limits

    limits, options = Limits.from_scan(pack.scan), Options.from_scan(pack.scan)
    mirrors, checked = [], None
    try:
        local_target, base = target, settings.base
        if is_url(target):
            checked = stage(target, limits, options, fill_if=lambda m: _transformers_reads(m, settings, pack),
                            hashes=bool(settings.hashes), progress=settings.progress)
            mirrors.append(checked)
            local_target = checked.target
        if is_url(settings.base):
            staged_base = stage(settings.base, limits, options, progress=settings.progress)
            mirrors.append(staged_base)
            base = staged_base.target
        # hashes of the mirror's files are taken here, from the objects (a staged header is not the object)
        inner = dataclasses.replace(settings, base=base, hashes=settings.hashes and checked is None)
        try:
            report = run(local_target, inner)
        except InputError as e:
            raise unstaged_error(e, mirrors) from None
        for m in mirrors:   # an object overwritten while it was read: the report is of no real bytes
            check_unchanged(m)
        report.settings = dataclasses.replace(report.settings, base=settings.base, hashes=settings.hashes)
        if checked is not None:   # an attestation (hash_all) names every object's digest, not only the read ones
            _object_rows(report.scan, checked, settings.hashes, bool(getattr(settings, "hash_all", False)))
        report.remote_paths = _paths(mirrors)
        return report
    finally:
        for m in mirrors:
            m.close()


def _transformers_reads(mirror: Mirror, settings, pack) -> bool:
    """Whether transformers will read the weight files themselves (the task model's load report and
    the probe): a folder with config.json whose weights fit the memory the task model may take."""
    from ..hf import mem_available

    if mirror.target != mirror.folder or "config.json" not in mirror.objects:
        return False
    probe = not (settings.probe is False or (settings.probe is None and pack.probe is False))
    if not (settings.task or probe):
        return False
    need = sum(mirror.objects[rel].size for rel in mirror.streamed)
    avail = mem_available()
    return avail is None or need <= float(pack.scan.get("task_model_memory_fraction", 0.5)) * avail


def _object_rows(scan, mirror: Mirror, hashes: bool, every: bool = False):
    """Each object's row: its URL, ETag and version, and its SHA-256 when hashes are on (of the files
    the check read, or of ``every`` fetched or streamed object)."""
    scan.path = mirror.url
    ckpt = scan.checkpoint
    read = {f.path for f in ckpt.files} if ckpt is not None else set()
    for row in scan.files or []:
        obj = mirror.objects.get(row["path"])
        if obj is None:
            continue
        row["url"] = obj.url
        if obj.etag:
            row["etag"] = obj.etag
        if obj.version:
            row["version"] = obj.version
        if hashes and (row["path"] in read or every) and obj.rel not in mirror.unfetched:
            row["sha256"] = _digest(mirror, obj, ckpt.readers.get(row["path"]) if ckpt is not None else None)


def _digest(mirror: Mirror, obj, reader) -> str:
    """A streamed object's hash from its reader (or a streamed read); a whole-fetched one's from its copy."""
    inner = getattr(reader, "_inner", reader)   # a side weight file's reader wraps the file's own
    if isinstance(inner, RemoteSafetensors):
        return inner.digest()
    if obj.rel not in mirror.streamed:   # fetched whole: its staged copy
        return sha256_file(os.path.join(mirror.folder, obj.rel))
    h = hashlib.sha256()   # staged as its header only: the object's bytes, streamed
    for _, data in mirror.chunks(obj, 0, obj.size):
        h.update(data)
    return h.hexdigest()


def _paths(mirrors) -> list:
    """``(staged path, URL)`` pairs, longest staged path first (a single object's file before its folder)."""
    pairs = []
    for m in mirrors:
        for folder in {m.folder, os.path.realpath(m.folder)}:
            if m.target != m.folder:
                pairs.append((os.path.join(folder, os.path.basename(m.target)), m.url))
                pairs.append((folder, m.url.rsplit("/", 1)[0]))
            else:
                pairs.append((folder, m.url.rstrip("/")))
    return sorted(pairs, key=lambda p: -len(p[0]))


def unstage(value, pairs):
    """``value`` (a report dict, a list, a string) with every staging path replaced by its URL."""
    if isinstance(value, str):
        for staged, url in pairs:
            if staged in value:
                value = value.replace(staged, url)
        return value
    if isinstance(value, dict):
        return {unstage(k, pairs) if isinstance(k, str) else k: unstage(v, pairs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(unstage(v, pairs) for v in value)
    return value


def unstaged_error(e: InputError, mirrors) -> InputError:
    """The same one-line error, naming the object's URL instead of its staged or relative path."""
    pairs = _paths(mirrors)
    path = e.path
    owner = next((m for m in mirrors if m.target == m.folder and path in m.objects), None)
    if owner is not None:   # a name relative to the mirrored folder
        path = owner.objects[path].url
    elif path is not None:
        path = unstage(path, pairs)
    return InputError(path, unstage(e.problem, pairs))
