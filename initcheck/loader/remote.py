"""Checkpoints in object storage (``s3://``, ``gs://``, any fsspec URL), checked without a copy first.

The loader reads local folders (contained opens, mmap'd safetensors, the pickle scanners). Rather
than teach each reader a second kind of path, a URL is mirrored into a private staging folder
(``tempfile.mkdtemp``, removed after the run, never in the user's folder) whose files the
unchanged loader opens:

- every object under the prefix is listed (nothing outside it is read; a key with ``..``, an empty
  or absolute part is refused);
- a ``.safetensors`` object becomes a sparse file of its true size holding only its header,
  fetched by range (the first ``remote_head_bytes``, then the rest of a longer header), so
  ``SafetensorsFile`` validates it unchanged; its tensors are then read by ``RemoteSafetensors``,
  which fetches them by range in large sequential reads (``remote_read_bytes``) with
  ``remote_prefetch_bytes`` in flight ahead, on ``remote_connections`` threads: memory is bounded by
  the largest tensor plus the prefetch window;
- every other object (config, tokenizer, pickles, side files) is fetched whole, up to
  ``remote_fetch_max_bytes``; a larger one is left in the bucket and listed as not scanned.

When transformers will read the weights (a task model built from a folder with config.json that
fits in memory), the streamed bytes are also written into the mirror (``fill``), so the load report
and the probe read the real weights from the same single pass. Hashes are taken in the same stream
when the tensors are read in file order (they tile the data region), else by a second streamed read.

Credentials come from each filesystem's own environment and config (``AWS_*`` / ``~/.aws`` for
s3fs, ``GOOGLE_APPLICATION_CREDENTIALS`` / gcloud for gcsfs); initcheck has no flags for them.
"""

import hashlib
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

# a URL is scheme://...; Windows drive letters (C:\) have no "//"
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# protocols whose filesystem is an initcheck extra: (package, extra)
_EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
_CREDENTIALS = {"s3": "AWS_ACCESS_KEY_ID / AWS_PROFILE or ~/.aws/credentials",
                "gs": "GOOGLE_APPLICATION_CREDENTIALS or gcloud auth application-default login"}

# staging folder (real path) -> Mirror, for the loader's hooks (``reader_for``, ``is_mirror_file``)
MIRRORS = {}


def is_url(target) -> bool:
    """Whether ``target`` names object storage (``scheme://...``) rather than a local path."""
    return isinstance(target, str) and bool(_URL.match(target))


def filesystem(url: str):
    """``(fs, path)`` for ``url`` through fsspec; a missing optional package or an unknown protocol is
    one line (exit 2)."""
    protocol = _URL.match(url).group(1).lower()
    try:
        import fsspec
        import fsspec.core

        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        pkg, extra = _EXTRAS.get(protocol, (None, None))
        if pkg:
            raise InputError(url, f"reading {protocol}:// needs {pkg}: pip install 'initcheck[{extra}]'") from None
        raise InputError(url, f"reading {protocol}:// needs a package fsspec names: {str(e).splitlines()[0][:160]}") from None
    except ValueError:
        raise InputError(url, f"unknown storage protocol {protocol}:// (no fsspec filesystem has that name)") from None
    try:
        # a fresh instance: credentials are read from the environment as it is now, not as a cached one saw it
        return fsspec.core.url_to_fs(url, skip_instance_cache=True)
    except Exception as e:  # noqa: BLE001 - a filesystem refusing its own options: one line
        raise storage_error(url, e) from None


def storage_error(url: str, e: BaseException) -> InputError:
    """One line for a failed listing or read: missing, denied, no credentials, or the store's own words."""
    name = type(e).__name__
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else name
    protocol = url.split("://", 1)[0]
    creds = _CREDENTIALS.get("gs" if protocol in ("gs", "gcs") else "s3" if protocol.startswith("s3") else "", "")
    if isinstance(e, FileNotFoundError):
        return InputError(url, "no such object or prefix")
    if isinstance(e, PermissionError) or "AccessDenied" in text or "Forbidden" in text or "403" in text:
        return InputError(url, f"access denied ({text})" + (f"; credentials come from {creds}" if creds else ""))
    if name in ("NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"):
        return InputError(url, f"no credentials found ({text})" + (f"; set {creds}" if creds else ""))
    return InputError(url, f"cannot read: {name}: {text}")


@dataclass
class RemoteObject:
    """One object under the prefix, as listed."""

    rel: str   # path under the prefix: the file name in the mirror and in the report
    key: str   # the filesystem's path
    url: str
    size: int
    etag: str = ""
    version: str = ""
    head: bytes = b""   # a safetensors object's header bytes (8 + n), staged in the mirror


@dataclass
class Options:
    """The ``[scan]`` remote_* keys (rules/default.toml)."""

    read_bytes: int = 64 << 20
    prefetch_bytes: int = 256 << 20
    connections: int = 4
    head_bytes: int = 1 << 16
    fetch_max_bytes: int = 16 << 30

    @classmethod
    def from_scan(cls, scan: dict) -> "Options":
        from .limits import _default_scan

        base = _default_scan()

        def get(key, default):
            return int(scan.get(key, base.get(key, default)))

        # a read of 0 bytes would never advance: each size has a floor
        return cls(max(get("remote_read_bytes", cls.read_bytes), 4096), max(get("remote_prefetch_bytes", cls.prefetch_bytes), 1),
                   max(get("remote_connections", cls.connections), 1), max(get("remote_head_bytes", cls.head_bytes), 16),
                   get("remote_fetch_max_bytes", cls.fetch_max_bytes))


@dataclass
class Mirror:
    """A URL mirrored into a staging folder: what was fetched, what was left out, and the fetch counters."""

    url: str
    fs: object
    folder: str
    target: str   # the folder, or the one object's file in it
    options: Options
    objects: dict = field(default_factory=dict)   # rel -> RemoteObject
    streamed: set = field(default_factory=set)    # rels staged as header-only safetensors
    unfetched: dict = field(default_factory=dict)  # rel -> why it was left in the bucket
    listed: int = 0   # objects under the prefix (more than max_files: the rest were not mirrored)
    max_files: int = 0
    fill: bool = False
    hashes: bool = False
    progress: object = None
    readers: list = field(default_factory=list)
    fetched: int = 0   # bytes, since _t0
    _t0: float = field(default_factory=time.perf_counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor = None
    _said: float = 0.0

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.options.connections, thread_name_prefix="initcheck-fetch")
        return self._pool

    def fetch(self, obj: RemoteObject, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``obj``, exactly (a short read is a truncated object: one line)."""
        try:
            data = self.fs.cat_file(obj.key, start=start, end=end)
        except Exception as e:  # noqa: BLE001 - every storage failure is one line
            raise storage_error(obj.url, e) from None
        if len(data) != end - start:
            raise InputError(obj.url, f"truncated while being read: {start + len(data)} bytes, listed as {obj.size} "
                                      "(the object changed or was cut after it was listed)")
        with self._lock:
            self.fetched += len(data)
        return data

    def say(self, force: bool = False):
        """Bytes fetched and throughput to the progress display (at most 5 times a second)."""
        now = time.perf_counter()
        if self.progress is None or not hasattr(self.progress, "fetched") or not force and now - self._said < 0.2:
            return
        self._said = now
        self.progress.fetched(self.fetched, now - self._t0)

    def chunks(self, obj: RemoteObject, start: int, end: int):
        """``(offset, bytes)`` of ``[start, end)`` in order, ``read_bytes`` at a time, with up to
        ``prefetch_bytes`` requested ahead on the pool's threads."""
        step, ahead = self.options.read_bytes, max(1, self.options.prefetch_bytes // max(self.options.read_bytes, 1))
        pending, at = deque(), start
        try:
            while pending or at < end:
                while at < end and len(pending) < ahead:
                    n = min(step, end - at)
                    pending.append((at, self.pool.submit(self.fetch, obj, at, at + n)))
                    at += n
                off, fut = pending.popleft()
                data = fut.result()
                self.say()
                yield off, data
        finally:
            for _, fut in pending:
                fut.cancel()

    def close(self):
        for r in self.readers:
            r.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        MIRRORS.pop(os.path.realpath(self.folder), None)
        shutil.rmtree(self.folder, ignore_errors=True)


def stage(url: str, limits, options: Options, fill_if=None, hashes: bool = False, progress=None) -> Mirror:
    """List ``url``'s objects and mirror them into a new staging folder (see the module docstring).

    Args:
        url: an fsspec URL: a prefix (``s3://bucket/run/``) or one object (``s3://bucket/model.safetensors``).
        limits: the pack's ``[scan]`` limits (``max_files``).
        options: the ``remote_*`` keys.
        fill_if: ``fill_if(objects) -> bool``: write streamed tensors into the mirror too (transformers
            will read the weights).
        hashes: hash each streamed object as it is read.
        progress: the run's progress observer (``fetched(nbytes, seconds)``).

    Raises:
        InputError: missing package, unknown protocol, nothing there, denied, a refused key.
    """
    fs, objects = list_objects(url)
    single = len(objects) == 1 and objects[0].url == url   # one object named by its own URL, not a prefix
    folder = tempfile.mkdtemp(prefix="initcheck-remote-")
    mirror = Mirror(url=url, fs=fs, folder=folder, target=folder, options=options, hashes=hashes, progress=progress,
                    max_files=limits.max_files)
    MIRRORS[os.path.realpath(folder)] = mirror
    try:
        mirror.listed = len(objects)
        if len(objects) > limits.max_files and limits.walk_limit_is_error:
            raise InputError(url, f"holds {len(objects)} objects, over the rule pack's max_files ({limits.max_files}): "
                                  "the objects past the limit would not be scanned")
        # past max_files, the first nested objects in sorted order are kept, as the local walk keeps them; the
        # top-level ones always are (the loader picks the weight files among them, as from a local listing)
        top = [o for o in objects if "/" not in o.rel]
        nested = [o for o in objects if "/" in o.rel][:max(0, limits.max_files - len(top))]
        for obj in sorted(top + nested, key=lambda o: o.rel):
            mirror.objects[obj.rel] = obj
        if single:
            mirror.target = os.path.join(folder, objects[0].rel)
        if hasattr(progress, "phase"):
            progress.phase(f"fetching {url} ({len(mirror.objects)} objects)")
        try:
            _fetch_all(mirror, single)
        except OSError as e:   # the staging disk (full, a name it cannot hold): one line, not a traceback
            raise InputError(url, f"cannot stage its objects in {tempfile.gettempdir()}: "
                                  f"{e.strerror or e}{' (' + os.path.basename(e.filename) + ')' if e.filename else ''}") from None
        mirror.fill = bool(fill_if and fill_if(mirror))
        if mirror.fill:   # transformers opens these files: each streamed byte is written into them too
            for rel in mirror.streamed:
                os.chmod(os.path.join(folder, rel), 0o600)
        mirror.say(force=True)
    except BaseException:
        mirror.close()
        raise
    return mirror


def list_objects(url: str) -> tuple:
    """``(fs, objects)``: the objects under ``url`` (nothing outside the prefix, folder markers skipped, a
    key that could leave it refused), for ``stage`` and ``initcheck verify``; nothing is fetched. An empty prefix, a denied or failed listing is one line (``InputError``)."""
    fs, path = filesystem(url)
    path = path.rstrip("/")
    try:
        info = fs.info(path)
        single = info.get("type") == "file"
        found = {path: info} if single else fs.find(path, detail=True)
    except Exception as e:  # noqa: BLE001
        raise storage_error(url, e) from None
    objects = _objects(url, path, found, single)
    if not objects:
        raise InputError(url, "no objects under this prefix")
    return fs, objects


def sha256_objects(fs, objects: list, options: Options) -> dict:
    """``{rel: sha256}`` of each object, streamed by range and never written to disk: an object larger
    than ``remote_read_bytes`` in sequential reads with ``remote_prefetch_bytes`` ahead, smaller ones
    whole and in parallel up to that window; memory is bounded by the window, not by the objects."""
    reads = Mirror(url="", fs=fs, folder="", target="", options=options)   # its fetch and chunks only: no folder
    out, pending, inflight = {}, deque(), 0

    def done():
        obj, future = pending.popleft()
        out[obj.rel] = hashlib.sha256(future.result() if future is not None else b"").hexdigest()
        return obj.size

    try:
        for obj in objects:
            if obj.size <= options.read_bytes:
                pending.append((obj, reads.pool.submit(reads.fetch, obj, 0, obj.size) if obj.size else None))
                inflight += obj.size
                while pending and inflight > options.prefetch_bytes:
                    inflight -= done()
                continue
            while pending:   # one window at a time: the small ones in flight finish first
                inflight -= done()
            h = hashlib.sha256()
            for _, data in reads.chunks(obj, 0, obj.size):
                h.update(data)
            out[obj.rel] = h.hexdigest()
        while pending:
            done()
    finally:
        if reads._pool is not None:
            reads._pool.shutdown(wait=True, cancel_futures=True)
    return out


def check_unchanged(mirror: "Mirror"):
    """Every object the check read still has the ETag (and version) it was listed with.

    Ranged reads of an object overwritten mid-run would mix two versions into bytes that never existed
    together, and a report and hashes of them; a shorter replacement is caught by the read itself
    (``truncated while being read``), one of the same size only here. One HEAD per object.
    """
    for rel, obj in sorted(mirror.objects.items()):
        if rel in mirror.unfetched or not (obj.etag or obj.version):
            continue
        try:
            try:
                info = mirror.fs.info(obj.key, refresh=True)   # s3fs caches listings: ask the store again
            except TypeError:   # a filesystem without ``refresh``
                info = mirror.fs.info(obj.key)
        except Exception as e:  # noqa: BLE001 - gone, denied: the object is not the one that was read
            raise storage_error(obj.url, e) from None
        if (obj.etag and _etag(info) != obj.etag) or (obj.version and _version(info) != obj.version):
            raise InputError(obj.url, f"changed while it was being read (ETag {obj.etag} when listed, {_etag(info)} now): "
                                      "the report would describe bytes that never existed together; check it again")


def _objects(url: str, path: str, found: dict, single: bool) -> list:
    """The listed objects with their names under the prefix; a name that could leave it is refused."""
    out, dirs = [], set()
    for key, info in sorted(found.items()):
        if info.get("type", "file") != "file":
            continue
        rel = key.rsplit("/", 1)[-1] if single else key[len(path) + 1:] if key.startswith(path + "/") else None
        if rel is None or key.endswith("/") and not info.get("size"):
            continue   # a folder marker ("prefix/sub/", 0 bytes), or outside the prefix: never read
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\x00" in rel or len(rel) > 1024:
            raise InputError(url, f"refusing object key {rel[:120]!r}: its name could leave the prefix "
                                  "(empty, '.' or '..' parts); nothing outside the prefix is read")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        out.append(RemoteObject(rel=rel, key=key, url=f"{url.rstrip('/')}/{rel}" if not single else url,
                                size=int(info.get("size") or 0), etag=_etag(info), version=_version(info)))
    clash = next((o.rel for o in out if o.rel in dirs), None)
    if clash:
        raise InputError(url, f"object {clash!r} is also a prefix of other objects: it cannot be mirrored as a folder")
    return out


def _etag(info: dict) -> str:
    for key in ("ETag", "etag", "md5Hash", "md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    return ""


def _version(info: dict) -> str:
    for key in ("VersionId", "version_id", "generation"):
        if info.get(key) not in (None, "", "null"):
            return str(info[key])
    return ""


def _fetch_all(mirror: Mirror, single: bool):
    """Stage each object: a safetensors object's header, every other object whole (up to the limit)."""
    heads, whole = [], []
    for obj in mirror.objects.values():
        if obj.rel.endswith(".safetensors") or single and _looks_safetensors(mirror, obj):
            heads.append(obj)
        elif obj.size > mirror.options.fetch_max_bytes:
            mirror.unfetched[obj.rel] = (f"{obj.size} bytes, over the rule pack's remote_fetch_max_bytes "
                                         f"({mirror.options.fetch_max_bytes}): left in the bucket, not fetched")
        else:
            whole.append(obj)
    # the first read of every header at once, then the rest of any longer one
    firsts = {o.rel: mirror.pool.submit(mirror.fetch, o, 0, min(o.size, mirror.options.head_bytes)) for o in heads}
    for obj in heads:
        _stage_header(mirror, obj, firsts[obj.rel].result())
    # small objects in parallel, at most prefetch_bytes in flight; large ones in sequential chunks
    pending, inflight = deque(), 0
    for i, obj in enumerate(whole):
        if obj.size > mirror.options.read_bytes:
            while pending:
                inflight -= _write_whole(mirror, *pending.popleft())
            _write_whole(mirror, obj, None)
            continue
        pending.append((obj, mirror.pool.submit(mirror.fetch, obj, 0, obj.size)))
        inflight += obj.size
        while pending and (inflight > mirror.options.prefetch_bytes or i == len(whole) - 1):
            inflight -= _write_whole(mirror, *pending.popleft())


def _write_whole(mirror: Mirror, obj: RemoteObject, future) -> int:
    """An object fetched whole into the mirror (from ``future``, or in chunks); its size."""
    with os.fdopen(_create(mirror, obj), "wb") as f:
        if future is not None:
            f.write(future.result())
        else:
            for _, data in mirror.chunks(obj, 0, obj.size):
                f.write(data)
    mirror.say()
    return obj.size


def annotate(ckpt):
    """The checked mirror's objects that stayed in the bucket, in the file table as not scanned (over
    ``remote_fetch_max_bytes``), and a listing cut at ``max_files`` as the local walk's (IC405)."""
    mirror = mirror_of(ckpt.root)
    if mirror is None or os.path.realpath(ckpt.root) != os.path.realpath(mirror.folder):
        return   # not a mirror, or a checkpoint inside one (a run's checkpoint-N/): the names are the root's
    from . import FileInfo, _kind

    taken = {f.path for f in ckpt.files + ckpt.other_files}
    for rel, why in mirror.unfetched.items():
        if rel not in taken:
            ckpt.other_files.append(FileInfo(rel, mirror.objects[rel].size, "other", _kind(rel), "not scanned", why))
            ckpt.unscanned[rel] = why
            ckpt.unscanned_bound.add(rel)
    if mirror.listed > mirror.max_files:
        ckpt.walk_limit = {"folder": mirror.url, "files": mirror.listed, "limit": mirror.max_files, "at_least": False}


def _looks_safetensors(mirror: Mirror, obj: RemoteObject) -> bool:
    """A single object named anything (``model.weights``): safetensors when its first bytes say so."""
    if obj.size < 10:
        return False
    first = mirror.fetch(obj, 0, 10)
    (n,) = struct.unpack("<Q", first[:8])
    return first[8:9] == b"{" and n <= obj.size - 8


def _create(mirror: Mirror, obj: RemoteObject) -> int:
    full = os.path.join(mirror.folder, obj.rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    return os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o400)


def _stage_header(mirror: Mirror, obj: RemoteObject, first: bytes):
    """A sparse file of the object's size holding its header: the loader validates it as any file."""
    from .safetensors_file import MAX_HEADER_BYTES

    head = first[:8]
    if len(first) >= 8:
        (n,) = struct.unpack("<Q", first[:8])
        if n <= MAX_HEADER_BYTES and 8 + n <= obj.size:   # else SafetensorsFile says why, from the size
            head = first[:8 + n] if 8 + n <= len(first) else first + mirror.fetch(obj, len(first), 8 + n)
    obj.head = head
    fd = _create(mirror, obj)
    try:
        os.write(fd, head) if head else None
        os.ftruncate(fd, obj.size)
    finally:
        os.close(fd)
    mirror.streamed.add(obj.rel)


def mirror_of(path):
    """The Mirror whose staging folder holds ``path``, or None (no filesystem access)."""
    if not MIRRORS:
        return None
    real = os.path.realpath(path)
    for folder, mirror in MIRRORS.items():
        if real == folder or real.startswith(folder + os.sep):
            return mirror
    return None


def is_mirror_file(path) -> bool:
    """A staged safetensors file: sparse by design (its tensors are fetched by range, never read from it)."""
    mirror = mirror_of(path)
    return mirror is not None and os.path.relpath(os.path.realpath(path), os.path.realpath(mirror.folder)) in mirror.streamed


def reader_for(full, rel: str, root=None):
    """The loader's reader for a staged safetensors file (``RemoteSafetensors``), or None for any other."""
    mirror = mirror_of(full) if MIRRORS else None
    if mirror is None:
        return None
    inner = os.path.relpath(os.path.realpath(full), os.path.realpath(mirror.folder)).replace(os.sep, "/")
    if inner not in mirror.streamed:
        return None
    reader = RemoteSafetensors(mirror, mirror.objects[inner], full, rel, root)
    mirror.readers.append(reader)
    return reader


class RemoteSafetensors:
    """A safetensors object read by range: the header from the mirror, each tensor from the store.

    Tensors asked for in file order are served from one sequential stream (``Mirror.chunks``):
    ``remote_read_bytes`` per request, ``remote_prefetch_bytes`` in flight ahead. A tensor asked for
    out of order is fetched on its own, and the stream restarts when reads are sequential again.
    """

    mapped = False   # the scan reads file order, not largest first: sequential reads stream

    def __init__(self, mirror: Mirror, obj: RemoteObject, full, rel: str, root=None):
        from .safetensors_file import SafetensorsFile

        self.mirror, self.obj = mirror, obj
        self._file = SafetensorsFile(full, rel, root)   # validates the staged header as any file's
        self.path, self.relpath, self.size = self._file.path, rel, self._file.size
        self.metadata, self.entries = self._file.metadata, self._file.entries
        self._start = self._file._data_start
        self._lock = threading.Lock()
        self._stream, self._pos, self._carry, self._carry_at = None, self._start, b"", self._start
        self._hash = hashlib.sha256(obj.head) if mirror.hashes and len(obj.head) == self._start else None
        self._hashed = self._start
        self._filled = [(0, self._start)]   # byte ranges written into the mirror (fill)
        self._wfd = os.open(full, os.O_WRONLY) if mirror.fill else None

    @property
    def sha256(self):
        """The object's SHA-256 when every byte passed through the stream in order, else None."""
        return self._hash.hexdigest() if self._hash is not None and self._hashed == self.size else None

    def array(self, entry):
        from .safetensors_file import SAFETENSORS_NP

        if entry.numel == 0:
            return np.zeros(entry.shape, dtype=SAFETENSORS_NP[entry.dtype])
        start, end = self._start + entry.start, self._start + entry.end
        with self._lock:
            if self._covered(start, end):   # already written into the mirror: read it there
                return self._file.array(entry)
            data = self._read(start, end)
        return np.frombuffer(data, dtype=SAFETENSORS_NP[entry.dtype], count=entry.numel).reshape(entry.shape)

    def _read(self, start: int, end: int) -> bytes:
        if start != self._pos:   # out of order: this tensor alone; the stream restarts at the next sequential read
            self._drop()
            parts = [self._got(off, data) for off, data in self.mirror.chunks(self.obj, start, end)]
            self._pos = end
            return b"".join(parts)
        if self._stream is None:
            self._stream = self.mirror.chunks(self.obj, start, self.size)
            self._carry, self._carry_at = b"", start
        parts, at = [], start
        while at < end:
            if not self._carry:
                self._carry_at, data = next(self._stream)
                self._carry = memoryview(self._got(self._carry_at, data))
            take = self._carry[:end - at]
            parts.append(take)
            self._carry, at = self._carry[len(take):], at + len(take)
        self._pos = end
        return b"".join(parts)

    def _got(self, off: int, data: bytes) -> bytes:
        """Every fetched range: hashed when it continues the hash, written into the mirror when filling."""
        if self._hash is not None and off == self._hashed:
            self._hash.update(data)
            self._hashed += len(data)
        if self._wfd is not None:
            os.pwrite(self._wfd, data, off)
            self._filled = _merge(self._filled, off, off + len(data))
        if off + len(data) == self.size:   # the object's last bytes: the final count on the display
            self.mirror.say(force=True)
        return data

    def _covered(self, start: int, end: int) -> bool:
        return self._wfd is not None and any(a <= start and end <= b for a, b in self._filled)

    def _drop(self):
        if self._stream is not None:
            self._stream.close()   # its pending requests are cancelled (Mirror.chunks' finally)
        self._stream, self._carry = None, b""

    def digest(self) -> str:
        """The object's SHA-256: from the stream when it saw every byte in order, else by reading it again."""
        if self.sha256 is not None:
            return self.sha256
        h = hashlib.sha256()
        for _, data in self.mirror.chunks(self.obj, 0, self.size):
            h.update(data)
        return h.hexdigest()

    def close(self):
        self._drop()
        self._file.close()
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None


def _merge(ranges: list, a: int, b: int) -> list:
    out = []
    for lo, hi in sorted(ranges + [(a, b)]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out
