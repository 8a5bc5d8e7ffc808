"""initcheck's torch-free reader agrees with ``torch.load(weights_only=True)``, tensor for tensor.

Real files written by ``torch.save`` (zip and legacy formats, and a big-endian archive made from
one) are read both ways; for every tensor the dtype, shape, strides, storage offset, which
tensors share one storage, and the stored bytes must be the same. No torch.load fallback runs on
our side: every file here is read by initcheck's own reader.
"""

import io
import zipfile

import numpy as np
import pytest
import torch

from initcheck.loader import default_safe_globals, open_checkpoint
from initcheck.loader.pickle_file import _flatten
from initcheck.loader.pickle_reader import read_tensors, view
from initcheck.loader.pickle_scan import parse_file


def _state_dict() -> dict:
    """Every layout torch.save writes for a state dict: shared storages, views, odd strides, dtypes."""
    torch.manual_seed(0)
    base = torch.randn(6, 8)
    fp8 = torch.randn(4, 6).to(torch.float8_e4m3fn)
    sd = {
        # views sharing one storage, at offsets, non-contiguous
        "shared.base": base, "shared.rows": base[2:4], "shared.t": base.t(), "shared.every_other": base[:, ::2],
        "shared.row": base[1], "shared.flat_slice": base.view(-1)[3:10], "shared.element": base[2, 3],
        "shared.empty_at_end": base[6:], "shared.column": base[:, 5],
        "permuted": torch.randn(2, 3, 4).permute(2, 0, 1), "channels_last": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
        "expanded_unit_dim": torch.arange(5).expand(1, -1), "param": torch.nn.Parameter(torch.randn(3)),
        # every dtype the statistics decode
        "f64": torch.randn(3, dtype=torch.float64), "f16": torch.randn(2, 5).half(), "bf16": torch.randn(4, 3).bfloat16(),
        "bf16_t": torch.randn(3, 4).bfloat16().t(), "fp8_e4m3fn": fp8, "fp8_e4m3fn_t": fp8.t(),
        "fp8_e5m2": torch.randn(5, 2).to(torch.float8_e5m2), "i64": torch.arange(-3, 4), "i32": torch.arange(5, dtype=torch.int32),
        "i16": torch.arange(4, dtype=torch.int16), "i8": torch.arange(-2, 2, dtype=torch.int8), "u8": torch.arange(6, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        # empty and zero-dimensional tensors
        "empty_rows": torch.zeros(0, 3), "empty_cols": torch.zeros(3, 0), "empty_bf16": torch.zeros(0, dtype=torch.bfloat16),
        "scalar": torch.tensor(3.5),
    }
    for dt in ("uint16", "uint32", "uint64"):  # the newer unsigned dtypes, where this torch saves them
        sd[dt] = torch.arange(5).to(getattr(torch, dt))
    return sd


def _ours(path):
    """``name -> (TensorRef, bytes as read)`` from initcheck's reader alone."""
    parsed = parse_file(str(path), path.name)
    found = read_tensors(parsed, path.name)
    buf = parsed.buf
    out = {n: (t, np.ascontiguousarray(view(buf, t, found.offsets[t.storage], found.big_endian)).tobytes())
           for n, t in found.tensors.items()}
    parsed.close()
    return out


def _theirs(path):
    sd = torch.load(path, weights_only=True, map_location="cpu")
    return _flatten(sd, path.name)[0]


def _raw(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _groups(pairs) -> set:
    """The partition of names into tensors that share one storage."""
    by = {}
    for name, key in pairs:
        by.setdefault(key, set()).add(name)
    return {frozenset(v) for v in by.values()}


def _meta(t: torch.Tensor):
    return str(t.dtype).removeprefix("torch."), tuple(t.shape), tuple(t.stride()), t.storage_offset()


def _assert_agree(path, expect: dict, torch_reads: bool = True):
    """Ours == torch.load's == what was saved, for every tensor of ``path``; ``torch_reads=False``
    for files torch.load cannot read back itself (then ours is held to what was saved)."""
    ours = _ours(path)
    theirs = _theirs(path) if torch_reads else expect
    assert ours.keys() == theirs.keys() == expect.keys()
    for name, t in theirs.items():
        ref, data = ours[name]
        got = (ref.dtype, ref.shape, ref.stride, ref.offset)
        assert got == _meta(t) == _meta(expect[name]), (path.name, name, got, _meta(t))
        assert data == _raw(t) == _raw(expect[name]), (path.name, name)
    # the same tensors share a storage (empty tensors have no bytes to share: left out)
    filled = [n for n, t in theirs.items() if t.numel()]
    assert _groups((n, id(ours[n][0].storage)) for n in filled) == \
        _groups((n, theirs[n].untyped_storage().data_ptr()) for n in filled)


# torch.load cannot read its own legacy files holding these (UntypedStorage has no dtype in torch 2.13)
LEGACY_TORCH_CANNOT = ("fp8_e4m3fn", "fp8_e4m3fn_t", "fp8_e5m2", "uint16", "uint32", "uint64")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_every_layout_agrees_with_torch_load(tmp_path, fmt):
    sd = _state_dict()
    path = tmp_path / f"{fmt}.pt"
    if fmt == "legacy":
        rest = {k: sd.pop(k) for k in LEGACY_TORCH_CANNOT if k in sd}
        torch.save(rest, tmp_path / "legacy-new-dtypes.pt", _use_new_zipfile_serialization=False)
        _assert_agree(tmp_path / "legacy-new-dtypes.pt", rest, torch_reads=False)
    torch.save(sd, path, _use_new_zipfile_serialization=fmt == "zip")
    _assert_agree(path, sd)
    # and the whole loader reads it with its own reader, not the fallback
    ckpt = open_checkpoint(path)
    assert ckpt.readers[path.name].reader == "initcheck" and len(ckpt.entries) == len(sd)
    ckpt.close()


def test_views_share_one_storage(tmp_path):
    """The shared views really are one storage in the file (a storage per view would hide bugs)."""
    sd = _state_dict()
    torch.save(sd, tmp_path / "m.pt")
    ours = _ours(tmp_path / "m.pt")
    shared = {id(ours[n][0].storage) for n in sd if n.startswith("shared.")}
    assert len(shared) == 1
    assert ours["shared.t"][0].stride == (1, 8) and ours["shared.flat_slice"][0].offset == 3


def _big_endian_copy(src, dst, sd):
    """``src`` as torch.save writes it on a big-endian machine: the byteorder record says "big" and
    every element is byte-swapped (made here, since torch writes the machine's order)."""
    parsed = parse_file(str(src), src.name)
    found = read_tensors(parsed, src.name)
    itemsize = {t.storage.key: sd[n].element_size() for n, t in found.tensors.items()}
    parsed.close()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            rest = name.partition("/")[2]
            if rest == "byteorder":
                data = b"big"
            elif rest.startswith("data/") and itemsize.get(rest[5:], 1) > 1:
                n = itemsize[rest[5:]]
                data = np.frombuffer(data, dtype=f"<u{n}").byteswap().tobytes()
            zout.writestr(name, data)


# torch 2.13 byte-swaps a storage by its storage class; these dtypes are saved over an
# UntypedStorage (bytes), so torch.load leaves their elements unswapped. Ours swap by the tensor's
# dtype and are held to the values that were saved.
BIG_ENDIAN_TORCH_UNSWAPPED = ("uint16", "uint32", "uint64")


def test_big_endian_archive_agrees_with_torch_load(tmp_path):
    sd = _state_dict()
    rest = {k: sd.pop(k) for k in BIG_ENDIAN_TORCH_UNSWAPPED if k in sd}
    for name, part, torch_reads in (("big.pt", sd, True), ("big-untyped.pt", rest, False)):
        torch.save(part, tmp_path / "little.pt")
        _big_endian_copy(tmp_path / "little.pt", tmp_path / name, part)
        assert zipfile.ZipFile(tmp_path / name).read("little/byteorder") == b"big"
        _assert_agree(tmp_path / name, part, torch_reads)
        ckpt = open_checkpoint(tmp_path / name)
        assert ckpt.readers[name].reader == "initcheck"
        ckpt.close()


def test_the_file_table_says_which_reader_ran(tmp_path, monkeypatch):
    """Our reader for what it knows; torch.load, with the reason, for what it does not."""
    monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", "0")
    torch.save({"w": torch.randn(4, 4)}, tmp_path / "plain.pt")
    torch.save({"w": torch.randn(4, 4).to(torch.float8_e4m3fnuz)}, tmp_path / "fnuz.pt")
    rows = {}
    for name in ("plain.pt", "fnuz.pt"):
        ckpt = open_checkpoint(tmp_path / name, safe_globals=default_safe_globals())
        rows[name] = next(f.as_dict() for f in ckpt.files if f.path == name)
        ckpt.close()
    assert rows["plain.pt"]["reader"] == "initcheck" and rows["plain.pt"]["note"] == "read by initcheck's own reader (no torch.load)"
    assert rows["fnuz.pt"]["reader"] == "torch.load"
    assert rows["fnuz.pt"]["note"] == ("read with torch.load(weights_only=True): initcheck's reader does not know "
                                       "dtype float8_e4m3fnuz")


def test_agreement_check_can_fail(tmp_path):
    """The comparison notices a single swapped byte (it is not vacuous)."""
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(sd, tmp_path / "m.pt")
    src = zipfile.ZipFile(tmp_path / "m.pt")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in src.namelist():
            data = src.read(n)
            z.writestr(n, data[:-1] + b"\x41" if n.endswith("data/0") else data)
    (tmp_path / "bad.pt").write_bytes(buf.getvalue())
    with pytest.raises(AssertionError):
        _assert_agree(tmp_path / "bad.pt", sd)
