"""Open a file inside a folder, and only inside it: one descriptor, checked, then read.

The model folder is untrusted, symlinks included. ``open_inside(root, rel)`` resolves ``rel``
under ``root``, refuses a path that resolves outside it (the Hugging Face cache's ``blobs/`` is
the one exception), then walks the resolved path from the allowed base one component at a time
with ``O_NOFOLLOW`` (so a symlink swapped in after the check is refused, not followed) and
checks with ``fstat`` that the descriptor is a regular file. Everything is then read through
that descriptor: nothing is opened twice by name.

Where the platform has no ``O_NOFOLLOW`` / ``dir_fd`` (Windows), the resolved path is opened
after the same check.
"""

import os
import stat

from ..errors import InputError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)   # a FIFO must not block the open: fstat refuses it next
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_WALK = bool(_NOFOLLOW and _DIRECTORY) and os.open in os.supports_dir_fd


def allowed_bases(root) -> list:
    """The real folders a file under ``root`` may resolve into: ``root`` itself and, for a Hugging
    Face cache snapshot (``models--org--name/snapshots/<rev>``), the repository's ``blobs/``."""
    real = os.path.realpath(root)
    bases = [real]
    parent = os.path.dirname(real)
    repo = os.path.dirname(parent)
    if os.path.basename(parent) == "snapshots" and os.path.basename(repo).startswith(("models--", "datasets--", "spaces--")):
        bases.append(os.path.join(repo, "blobs"))
    return bases


def resolve_inside(root, rel: str) -> tuple:
    """``(base, path relative to base)`` of ``rel`` resolved under ``root``.

    Raises:
        InputError: ``rel`` resolves outside ``root`` (and outside a cache snapshot's blobs).
    """
    target = os.path.realpath(os.path.join(root, rel))
    for base in allowed_bases(root):
        if target.startswith(base.rstrip(os.sep) + os.sep):
            return base, os.path.relpath(target, base)
    raise InputError(rel, f"resolves to {target}, outside the model folder; refusing to read it")


def open_inside(root, rel: str) -> int:
    """A read-only descriptor of the regular file ``rel`` under ``root``; the caller closes it.

    Raises:
        InputError: outside the folder, not a regular file (a FIFO, a device, a folder), changed
            into a symlink while being opened, or unreadable.
    """
    base, inner = resolve_inside(root, rel)
    try:
        fd = _open_beneath(base, inner) if _WALK else os.open(os.path.join(base, inner), os.O_RDONLY | _BINARY | _NONBLOCK)
    except OSError as e:
        raise InputError(rel, f"cannot open inside the model folder: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(rel, "is not a regular file; refusing to read it")
    return fd


def _open_beneath(base: str, inner: str) -> int:
    """Walk ``inner`` from ``base`` with O_NOFOLLOW on every component: no symlink is followed."""
    parts = inner.split(os.sep)
    dfd = os.open(base, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dfd)
            os.close(dfd)
            dfd = nxt
        return os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=dfd)
    finally:
        os.close(dfd)


def read_inside(root, rel: str, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``rel`` under ``root``, read through one contained descriptor.

    Raises:
        InputError: as ``open_inside``, or the file holds more than ``max_bytes`` (``st_size`` is
            not trusted: at most ``max_bytes + 1`` are read).
    """
    fd = open_inside(root, rel)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise InputError(rel, f"cannot read {what}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise InputError(rel, f"{what} is over the {max_bytes} byte limit")
    return raw


def is_inside(root, rel: str) -> bool:
    """Whether ``rel`` resolves inside ``root`` (no file is opened)."""
    try:
        resolve_inside(root, rel)
    except InputError:
        return False
    return True
