"""Read a ``torch.save`` zip archive the way torch's own reader does, and refuse anything ambiguous.

torch reads archives with miniz (``caffe2/serialize/inline_container.cc``), Python's ``zipfile``
reads them differently: it shifts every offset by any bytes in front of the archive, while miniz
takes the central directory's offsets as they are; and miniz looks records up by name
case-insensitively (``mz_zip_reader_locate_file`` without ``MZ_ZIP_FLAG_CASE_SENSITIVE``), by a
binary search that picks an arbitrary one of several matches. Each difference lets one file show
one archive to a scanner and another to ``torch.load``. So we parse the archive ourselves and only
accept the one layout on which every reader agrees:

- the file is exactly ``[local header + data (+ descriptor)] * n, central directory, (zip64 end
  records), end record``: no prefix, no gap, no second archive, no comment, no trailing bytes;
- each local header agrees with its central directory entry (name, flags, method, sizes);
- no two member names are equal once ASCII-lowercased (miniz's ``MZ_TOLOWER``);
- no encryption, no multi-disk archives, only stored or deflated members;
- no deflated member that inflates past the pack's ``zip_ratio_min_bytes`` at over ``zip_max_ratio``:1
  (a zip bomb: refused from the directory, before torch.load or we inflate it).

``Member.data_offset`` is computed as torch's ``getRecordOffset`` does: local header offset + 30 +
the *local* name and extra lengths.
"""

import struct
import zlib
from dataclasses import dataclass

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_END = b"PK\x05\x06"
_END64 = b"PK\x06\x06"
_LOCATOR64 = b"PK\x06\x07"
_DESCRIPTOR = b"PK\x07\x08"


class ZipError(Exception):
    """The archive is malformed, or readers could disagree about what it holds."""


@dataclass(frozen=True)
class Member:
    """One member as the central directory and its local header agree on it."""

    name: str
    header_offset: int
    data_offset: int
    compressed_size: int
    size: int
    method: int  # 0 stored, 8 deflated
    crc: int


class StrictZip:
    """A zip archive parsed from its bytes (an mmap or bytes object), with torch's record lookup.

    Args:
        buf: the whole file.
        max_members: the most members accepted (the rule pack's ``zip_max_members``).
        torch: hold the archive to torch's layout (every member in one top folder); False for
            other archives scanned for pickles (``.npz``, any zip in the folder).
        limits: the pack's bounds (``zip_max_ratio``, ``zip_ratio_min_bytes``); default: the default pack's.

    Raises:
        ZipError: for any layout that is not a single, plain, unambiguous archive.
    """

    def __init__(self, buf, max_members: int = 100_000, torch: bool = True, limits=None):
        if limits is None:
            from .limits import default_limits

            limits = default_limits()
        self.buf = buf
        self.members = _parse(buf, max_members)
        for m in self.members:
            check_member(m.name, m.size, m.compressed_size, m.method == 8, limits)
        self._by_lower = {}
        for m in self.members:
            key = _lower(m.name)
            if key in self._by_lower:
                other = self._by_lower[key].name
                what = "twice" if other == m.name else f"twice, as {other[:60]!r} and {m.name[:60]!r} (torch matches names case-insensitively)"
                raise ZipError(f"member {m.name[:60]!r} appears {what}")
            self._by_lower[key] = m
        # torch: the archive's folder is the first central directory entry's name up to its first '/'
        first = self.members[0].name
        self.folder = first.split("/", 1)[0]
        if not torch:
            return
        if "/" not in first:
            raise ZipError(f"first member {first[:60]!r} is not in a folder (torch refuses such archives)")

    def record(self, name: str):
        """The member torch's ``getRecord(name)`` reads (``<folder>/<name>``, case-insensitive), or None."""
        return self._by_lower.get(_lower(f"{self.folder}/{name}"))

    def head(self, m: Member, n: int) -> bytes:
        """The first ``n`` uncompressed bytes of a member (for sniffing; not CRC-checked)."""
        raw = self.buf[m.data_offset:m.data_offset + m.compressed_size]
        if m.method != 8:
            return bytes(raw[:n])
        try:
            return zlib.decompressobj(-15).decompress(bytes(raw[:max(n, 1 << 16)]), n)
        except zlib.error as e:
            raise ZipError(f"{m.name[:60]}: bad deflate stream ({e})") from None

    def read(self, m: Member, limit: int) -> bytes:
        """A member's uncompressed bytes, CRC-checked; at most ``limit`` bytes."""
        if m.size > limit:
            raise ZipError(f"{m.name[:60]} is {m.size} bytes, over the {limit} byte limit")
        raw = self.buf[m.data_offset:m.data_offset + m.compressed_size]
        if m.method == 8:
            d = zlib.decompressobj(-15)
            try:
                data = d.decompress(raw, limit + 1)
            except zlib.error as e:
                raise ZipError(f"{m.name[:60]}: bad deflate stream ({e})") from None
            if d.unconsumed_tail or d.unused_data or not d.eof:
                raise ZipError(f"{m.name[:60]}: deflate stream longer or shorter than declared")
        else:
            data = bytes(raw)
        if len(data) != m.size:
            raise ZipError(f"{m.name[:60]}: holds {len(data)} bytes, the directory says {m.size}")
        if zlib.crc32(data) != m.crc:
            raise ZipError(f"{m.name[:60]}: CRC mismatch")
        return data


def check_member(name: str, size: int, compressed: int, deflated: bool, limits) -> None:
    """Refuse a member that inflates past ``zip_ratio_min_bytes`` at over ``zip_max_ratio``:1.

    Raises:
        ZipError: naming the member, its sizes and the pack's limits.
    """
    if deflated and size > limits.zip_ratio_min_bytes and size > limits.zip_max_ratio * max(compressed, 1):
        raise ZipError(f"member {name[:60]!r} inflates {compressed} bytes to {size} ({size // max(compressed, 1)}:1), over the "
                       f"rule pack's zip_max_ratio ({limits.zip_max_ratio}:1 above {limits.zip_ratio_min_bytes} bytes)")


def _lower(name: str) -> str:
    # miniz lowercases byte by byte with MZ_TOLOWER: ASCII letters only
    return "".join(c.lower() if "A" <= c <= "Z" else c for c in name)


def _u(fmt, buf, off):
    end = off + struct.calcsize(fmt)
    if off < 0 or end > len(buf):
        raise ZipError("truncated zip structure")
    return struct.unpack(fmt, buf[off:end])


def _parse(buf, max_members: int) -> list:
    size = len(buf)
    end = size - 22
    # no comment and nothing after the end record: then miniz (last signature with 22 bytes after
    # it) and Python's zipfile (the last 22 bytes first) find the same end record
    if end < 0 or bytes(buf[end:end + 4]) != _END:
        raise ZipError("no end-of-archive record in the last 22 bytes (a comment, trailing bytes or a truncated archive)")
    _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, comment_len = _u("<4sHHHHIIH", buf, end)
    if comment_len:
        raise ZipError("archive has a comment")
    if disk or cd_disk or n_disk != n_total:
        raise ZipError("multi-disk archive")
    cd_end = end
    if end >= 20 and bytes(buf[end - 20:end - 16]) == _LOCATOR64:
        _, loc_disk, rec64, n_disks = _u("<4sIQI", buf, end - 20)
        if loc_disk or n_disks > 1:
            raise ZipError("multi-disk zip64 archive")
        if rec64 + 56 != end - 20 or bytes(buf[rec64:rec64 + 4]) != _END64:
            raise ZipError("zip64 end record is not where its locator says: prefixed or concatenated archive")
        (_, rec_size, _, _, d64, cd_d64, n_disk64, n_total64, cd_size64, cd_offset64) = _u("<4sQHHIIQQQQ", buf, rec64)
        if rec_size != 44 or d64 or cd_d64 or n_disk64 != n_total64:
            raise ZipError("zip64 end record is multi-disk or has extra data")
        # miniz takes the zip64 values unconditionally; the 32-bit ones must then agree or be saturated
        for small, big, sat in ((n_total, n_total64, 0xFFFF), (cd_size, cd_size64, 0xFFFFFFFF), (cd_offset, cd_offset64, 0xFFFFFFFF)):
            if small != big and small != sat:
                raise ZipError("zip64 and 32-bit end records disagree")
        n_total, cd_size, cd_offset, cd_end = n_total64, cd_size64, cd_offset64, rec64
    elif 0xFFFF in (n_total,) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise ZipError("end record needs zip64 values but has no zip64 locator")
    if cd_offset + cd_size != cd_end:
        raise ZipError(f"central directory ends at byte {cd_offset + cd_size}, not at the end record ({cd_end}): "
                       "prefixed, concatenated or multi-directory archive")
    if n_total == 0:
        raise ZipError("archive holds no members")
    if n_total > max_members:
        raise ZipError(f"{n_total} members, over the rule pack's zip_max_members ({max_members})")
    if n_total * 46 > cd_size:
        raise ZipError(f"central directory cannot hold {n_total} members")

    members, pos = [], cd_offset
    for _ in range(n_total):
        if bytes(buf[pos:pos + 4]) != _CENTRAL:
            raise ZipError(f"bad central directory entry at byte {pos}")
        (_, _, _, flags, method, _, _, crc, csize, usize, nlen, xlen, clen, dstart, _, _, lho) = _u("<4sHHHHHHIIIHHHHHII", buf, pos)
        raw_name = bytes(buf[pos + 46:pos + 46 + nlen])
        extra = bytes(buf[pos + 46 + nlen:pos + 46 + nlen + xlen])
        pos += 46 + nlen + xlen + clen
        if pos > cd_end:
            raise ZipError("central directory overruns its declared size")
        if dstart:
            raise ZipError("multi-disk archive")
        usize, csize, lho = _zip64(extra, usize, csize, lho)
        name = _name(raw_name, flags)
        if flags & 0x41:
            raise ZipError(f"member {name[:60]!r} is encrypted")
        if method not in (0, 8):
            raise ZipError(f"member {name[:60]!r} uses compression method {method} (only stored or deflated)")
        if method == 0 and csize != usize:
            raise ZipError(f"stored member {name[:60]!r} has different compressed and uncompressed sizes")
        members.append(_local(buf, name, raw_name, flags, method, crc, csize, usize, lho))
    if pos != cd_end:
        raise ZipError("central directory size does not match its entries")

    # every byte before the central directory belongs to exactly one member, in order
    ends = {0}
    for m in sorted(members, key=lambda m: m.header_offset):
        if m.header_offset not in ends:
            at = min(ends)
            what = "overlap" if m.header_offset < at else f"{m.header_offset - at} unclaimed bytes at byte {at}"
            raise ZipError(f"members do not tile the archive ({what}): hidden data or a second archive")
        ends = _member_ends(buf, m)
    if cd_offset not in ends:
        raise ZipError(f"{cd_offset - min(ends)} unclaimed bytes before the central directory: hidden data or a second archive")
    return members


def _zip64(extra: bytes, usize, csize, lho):
    """Apply a zip64 extra field (id 1) to the saturated 32-bit values, in the order the spec fixes."""
    need = [usize == 0xFFFFFFFF, csize == 0xFFFFFFFF, lho == 0xFFFFFFFF]
    if not any(need):
        return usize, csize, lho
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack("<HH", extra[i:i + 4])
        if tag == 1:
            body, vals, k = extra[i + 4:i + 4 + n], [usize, csize, lho], 0
            for j in range(3):
                if need[j]:
                    if k + 8 > len(body):
                        raise ZipError("truncated zip64 extra field")
                    vals[j] = struct.unpack("<Q", body[k:k + 8])[0]
                    k += 8
            return tuple(vals)
        i += 4 + n
    raise ZipError("saturated sizes without a zip64 extra field")


def _name(raw: bytes, flags: int) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ZipError(f"member name {raw[:60]!r} is not UTF-8") from None
    if not name or "\x00" in name or "\\" in name:
        raise ZipError(f"member name {name[:60]!r} is empty or holds NUL or backslash")
    return name


def _local(buf, name, raw_name, flags, method, crc, csize, usize, lho) -> Member:
    if bytes(buf[lho:lho + 4]) != _LOCAL:
        raise ZipError(f"member {name[:60]!r}: no local header at byte {lho}")
    (_, _, lflags, lmethod, _, _, lcrc, lcsize, lusize, lnlen, lxlen) = _u("<4sHHHHHIIIHH", buf, lho)
    lname = bytes(buf[lho + 30:lho + 30 + lnlen])
    if lname != raw_name:
        raise ZipError(f"member {name[:60]!r}: local header names it {lname[:60]!r}")
    if lflags != flags or lmethod != method:
        raise ZipError(f"member {name[:60]!r}: local header and central directory disagree on flags or method")
    if flags & 0x08:  # sizes in a data descriptor after the data: the local copies are zero or equal
        ok = (lcrc in (0, crc)) and (lcsize in (0, csize, 0xFFFFFFFF)) and (lusize in (0, usize, 0xFFFFFFFF))
    else:
        ok = lcrc == crc and lcsize in (csize, 0xFFFFFFFF) and lusize in (usize, 0xFFFFFFFF)
    if not ok:
        raise ZipError(f"member {name[:60]!r}: local header and central directory disagree on CRC or sizes")
    data = lho + 30 + lnlen + lxlen
    if data + csize > len(buf):
        raise ZipError(f"member {name[:60]!r}: data runs past the end of the file")
    return Member(name, lho, data, csize, usize, method, crc)


def _member_ends(buf, m: Member) -> set:
    """Where the member may end: after its data, or after its data descriptor when it has one
    (32- or 64-bit sizes: for a small member both can read right, the next header decides)."""
    end = m.data_offset + m.compressed_size
    (flags,) = _u("<H", buf, m.header_offset + 6)
    if not flags & 0x08:
        return {end}
    at = end + 4 if bytes(buf[end:end + 4]) == _DESCRIPTOR else end
    ends = set()
    for fmt in ("<III", "<IQQ"):
        try:
            crc, cs, us = _u(fmt, buf, at)
        except ZipError:
            continue
        if (crc, cs, us) == (m.crc, m.compressed_size, m.size):
            ends.add(at + struct.calcsize(fmt))
    if not ends:
        raise ZipError(f"member {m.name[:60]!r}: data descriptor disagrees with the central directory")
    return ends
