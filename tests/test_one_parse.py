"""One parse for checking and loading (issue 18): the bytes initcheck scans are the bytes a loader reads.

Each trick below is built as a harmless file: unpickling it would at most ``touch`` a marker file in
tmp_path. initcheck must refuse it (exit 2 with one line, or rule IC401 and "not loaded"), or read
exactly what ``torch.load(weights_only=True)`` reads, tensor for tensor (checked in a subprocess).
The corpus runs with the torch.load fallback off (``INITCHECK_NO_TORCH_LOAD=1``), so that no test
relies on torch's loader to catch what the scan missed, and once more with it on.
"""

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import findings_of, run_process


class _Shell:
    """Unpickling this runs ``touch marker``: the only effect any file below can have."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Storage:
    def __init__(self, key, numel, stype="FloatStorage"):
        self.key, self.numel, self.stype = key, numel, stype


class _Tensor:
    """A tensor reference with whatever offset, sizes and strides a test wants."""

    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(torch, obj.stype), obj.key, "cpu", obj.numel)
        return None


def _pickle(obj, protocol=2) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def torch_zip(path, pkl: bytes, records: dict, extra=()):
    """A torch.save-layout archive written by hand (stored members, like torch)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in records.items():
            z.writestr(f"archive/data/{key}", data)
        for name, data in extra:
            z.writestr(name, data)
        z.writestr("archive/version", "3\n")
    return path


def _saved(sd, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf, **kw)
    return buf.getvalue()


def _legacy_pickles(data: bytes):
    """Split a legacy torch file into its five pickles and the raw storage bytes."""
    import pickletools

    f, cuts = io.BytesIO(data), []
    for _ in range(5):
        for _op, _arg, _pos in pickletools.genops(f):
            pass
        cuts.append(f.tell())
    starts = [0] + cuts[:-1]
    return [data[s:e] for s, e in zip(starts, cuts)], data[cuts[-1]:]


# --- the corpus: name -> builder(tmp_path, marker) -> (path, expected) ----------------------------
# expected: ("exit2", words in the message) or ("ic401", a global named in the finding)

def case_colliding_members(tmp, marker):
    p = tmp / "collide.pt"
    p.write_bytes(_saved({"w": torch.zeros(2)}))
    with zipfile.ZipFile(p, "a") as z:  # torch's reader would load this one (case-insensitive lookup)
        z.writestr("archive/DATA.PKL", pickle.dumps({"w": _Shell(marker)}, protocol=2))
    return p, ("exit2", ["twice", "case-insensitively"])


def duplicate_member(tmp, marker):
    p = tmp / "dup.pt"
    p.write_bytes(_saved({"w": torch.zeros(2)}))
    with zipfile.ZipFile(p, "a") as z:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Duplicate name"
            z.writestr("archive/data.pkl", pickle.dumps({"w": _Shell(marker)}, protocol=2))
    return p, ("exit2", ["twice"])


def prefixed_zip(tmp, marker):
    # a fake local header in front: Python's zipfile shifts every offset, torch's miniz does not
    evil = _saved({"w": torch.zeros(2)}).replace(b"archive", b"archivX")
    p = tmp / "prefixed.pt"
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 60 + evil)
    return p, ("exit2", ["prefixed or concatenated"])


def pickle_prefixed_zip(tmp, marker):
    # a benign pickle in front of an archive: torch.load reads the pickle, zipfile the archive
    p = tmp / "polyglot.pt"
    hostile = io.BytesIO()
    with zipfile.ZipFile(hostile, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Shell(marker)}, protocol=2))
    p.write_bytes(pickle.dumps({"w": 1}, protocol=2) + hostile.getvalue())
    return p, ("exit2", ["not a torch checkpoint"])


def concatenated_zips(tmp, marker):
    p = tmp / "cat.pt"
    second = io.BytesIO()
    with zipfile.ZipFile(second, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Shell(marker)}, protocol=2))
        z.writestr("archive/version", "3\n")
    p.write_bytes(_saved({"w": torch.zeros(2)}) + second.getvalue())
    return p, ("exit2", ["cannot scan"])


def central_directory_differential(tmp, marker):
    # a member with a local header but no central directory entry: stream readers see it, torch does not
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", _saved_pkl({"w": torch.zeros(2)}))
        z.writestr("archive/evil.pkl", pickle.dumps({"w": _Shell(marker)}, protocol=2))
        z.writestr("archive/data/0", b"\0" * 8)
        z.writestr("archive/version", "3\n")
    data = buf.getvalue()
    end = data.rfind(b"PK\x05\x06")
    cd = struct.unpack("<I", data[end + 16:end + 20])[0]
    entries, pos = [], cd
    while pos < end:
        nlen, xlen, clen = struct.unpack("<HHH", data[pos + 28:pos + 34])
        entries.append(data[pos:pos + 46 + nlen + xlen + clen])
        pos += 46 + nlen + xlen + clen
    kept = [e for e in entries if b"evil.pkl" not in e]
    new_cd = b"".join(kept)
    eocd = data[end:end + 8] + struct.pack("<HHII", len(kept), len(kept), len(new_cd), cd) + data[end + 20:]
    p = tmp / "cddiff.pt"
    p.write_bytes(data[:cd] + new_cd + eocd)
    return p, ("exit2", ["unclaimed bytes"])


def local_header_disagrees(tmp, marker):
    # the central directory says data.pkl, the local header another name of the same length
    data = bytearray(_saved({"w": torch.zeros(2)}))
    i = data.find(b"archive/data.pkl")  # the first occurrence is the local header's
    data[i:i + 16] = b"archive/data.pkx"
    p = tmp / "lhdiff.pt"
    p.write_bytes(bytes(data))
    return p, ("exit2", ["local header"])


def _saved_pkl(sd) -> bytes:
    with zipfile.ZipFile(io.BytesIO(_saved(sd))) as z:
        return z.read("archive/data.pkl")


def legacy_hostile_second_pickle(tmp, marker):
    pickles, storages = _legacy_pickles(_saved({"w": torch.zeros(2)}, _use_new_zipfile_serialization=False))
    pickles[1] = pickle.dumps(_Shell(marker), protocol=2)  # where the protocol version should be
    p = tmp / "legacy2.pt"
    p.write_bytes(b"".join(pickles) + storages)
    return p, ("ic401", "system")


def legacy_hostile_sys_info(tmp, marker):
    pickles, storages = _legacy_pickles(_saved({"w": torch.zeros(2)}, _use_new_zipfile_serialization=False))
    pickles[2] = pickle.dumps({"little_endian": True, "x": _Shell(marker)}, protocol=0)  # protocol 0: no PROTO byte
    p = tmp / "legacy3.pt"
    p.write_bytes(b"".join(pickles) + storages)
    return p, ("ic401", "system")


def legacy_pickle_after_storages(tmp, marker):
    data = _saved({"w": torch.zeros(2)}, _use_new_zipfile_serialization=False)
    p = tmp / "legacy6.pt"
    p.write_bytes(data + pickle.dumps(_Shell(marker), protocol=2))
    return p, ("exit2", ["after the last legacy storage"])


def frame_boundary_split(tmp, marker):
    # protocol 4: a frame ends in the middle of an opcode. pickle.py refuses it, _pickle and
    # genops read straight through: readers disagree on what the pickle is
    body = _pickle({"w": _Shell(marker)}, protocol=4)
    assert body[2:3] == b"\x95"
    n = struct.unpack("<Q", body[3:11])[0]
    short = body[:3] + struct.pack("<Q", n // 2) + body[11:]
    p = tmp / "frame.pt"
    torch_zip(p, short, {})
    return p, ("exit2", ["frame"])


def frame_hides_next_pickle(tmp, marker):
    # legacy file whose first pickle's frame runs past its STOP: a reader that consumes whole frames
    # (pickle.py) starts the next pickle elsewhere than one that stops at STOP (_pickle, genops)
    pickles, storages = _legacy_pickles(_saved({"w": torch.zeros(2)}, _use_new_zipfile_serialization=False))
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[2:]  # without PROTO
    hidden = pickle.dumps(_Shell(marker), protocol=2)
    first = b"\x80\x04\x95" + struct.pack("<Q", len(magic) + len(hidden)) + magic + hidden
    p = tmp / "legacyframe.pt"
    p.write_bytes(first + b"".join(pickles[1:]) + storages)
    return p, ("exit2", ["frame"])


def undersized_storage_record(tmp, marker):
    # the pickle declares 16 floats, the record holds 2: torch's mmap path would read past it
    s = _Storage("0", 16)
    p = tmp / "short_record.pt"
    torch_zip(p, _pickle({"w": _Tensor(s, 0, (16,), (1,))}), {"0": b"\0" * 8})
    return p, ("exit2", ["declares 64 bytes", "holds 8"])


def tensor_larger_than_storage(tmp, marker):
    s = _Storage("0", 4)
    p = tmp / "big_view.pt"
    torch_zip(p, _pickle({"w": _Tensor(s, 0, (8,), (1,))}), {"0": b"\0" * 16})
    return p, ("exit2", ["needs 32 bytes", "holds 16"])


def stride_past_storage(tmp, marker):
    s = _Storage("0", 4)
    p = tmp / "stride.pt"
    torch_zip(p, _pickle({"w": _Tensor(s, 0, (2, 2), (4, 1))}), {"0": b"\0" * 16})
    return p, ("exit2", ["needs 24 bytes"])


def offset_past_storage(tmp, marker):
    s = _Storage("0", 4)
    p = tmp / "offset.pt"
    torch_zip(p, _pickle({"w": _Tensor(s, 3, (2,), (1,))}), {"0": b"\0" * 16})
    return p, ("exit2", ["needs 20 bytes"])


def zero_stride_terabyte_view(tmp, marker):
    # in bounds, but 2**40 repeats of one float: materializing it is the attack
    p = tmp / "expand.pt"
    torch_zip(p, _pickle({"w": _Tensor(_Storage("0", 1), 0, (2**20, 2**20), (0, 0))}), {"0": b"\0" * 4})
    return p, ("exit2", ["repeats elements"])


def storage_record_missing(tmp, marker):
    p = tmp / "norecord.pt"
    torch_zip(p, _pickle({"w": _Tensor(_Storage("0", 2), 0, (2,), (1,))}), {"1": b"\0" * 8})
    return p, ("exit2", ["no record data/0"])


def storage_redeclared(tmp, marker):
    # the same key with two sizes: torch keeps the first, a scan might keep the second
    p = tmp / "redeclared.pt"
    torch_zip(p, _pickle({"a": _Tensor(_Storage("0", 2), 0, (2,), (1,)), "b": _Tensor(_Storage("0", 64), 0, (64,), (1,))}),
              {"0": b"\0" * 8})
    return p, ("exit2", ["declared twice"])


def safetensors_trailing_bytes(tmp, marker):
    p = tmp / "model.safetensors"
    save_file({"w": torch.ones(4)}, p)
    p.write_bytes(p.read_bytes() + pickle.dumps(_Shell(marker), protocol=2))
    return p, ("exit2", ["trailing bytes"])


def safetensors_gap(tmp, marker):
    header = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                         "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}).encode()
    p = tmp / "gap.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    return p, ("exit2", ["belong to no tensor"])


def builtin_eval_protocol0(tmp, marker):
    # Python 2 module name: torch and pickle map __builtin__ to builtins before importing
    pkl = b"(dp0\nVw\np1\nc__builtin__\neval\np2\n(V__import__('os').system('touch " + str(marker).encode() + b"')\np3\ntp4\nRp5\ns."
    p = tmp / "eval.pt"
    torch_zip(p, pkl, {})
    return p, ("ic401", "builtins.eval")


def copy_reg_protocol0_plain(tmp, marker):
    pkl = b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR."
    p = tmp / "copyreg.bin"
    p.write_bytes(pkl)
    return p, ("ic401", "copyreg._reconstructor")


def tar_polyglot(tmp, marker):
    # torch.load tries its pre-1.0 tar format before the pickle stream
    import tarfile

    p = tmp / "tar.pt"
    with tarfile.open(p, "w") as t:
        info = tarfile.TarInfo("pickle")
        data = pickle.dumps(_Shell(marker), protocol=2)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return p, ("exit2", ["tar archive"])


CORPUS = [case_colliding_members, duplicate_member, prefixed_zip, pickle_prefixed_zip, concatenated_zips,
          central_directory_differential, local_header_disagrees, legacy_hostile_second_pickle, legacy_hostile_sys_info,
          legacy_pickle_after_storages, frame_boundary_split, frame_hides_next_pickle, undersized_storage_record,
          tensor_larger_than_storage, stride_past_storage, offset_past_storage, zero_stride_terabyte_view, storage_record_missing, storage_redeclared,
          safetensors_trailing_bytes, safetensors_gap, builtin_eval_protocol0, copy_reg_protocol0_plain, tar_polyglot]


@pytest.fixture
def no_fallback(monkeypatch):
    monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", "1")


@pytest.fixture
def with_fallback(monkeypatch):
    """The torch.load fallback on, even in a suite run with INITCHECK_NO_TORCH_LOAD=1."""
    monkeypatch.delenv("INITCHECK_NO_TORCH_LOAD", raising=False)


def assert_refused(r, path, expected):
    kind, what = expected
    if kind == "exit2":
        err = r.stderr.strip()
        assert r.exit_code == 2, (r.exit_code, r.stdout[-400:], err)
        assert err.startswith("initcheck: error:") and "\n" not in err and "Traceback" not in err, err
        assert path.name in err, err
        for w in what:
            assert w in err, (w, err)
    else:
        assert r.exit_code == 1, (r.exit_code, r.stderr)
        (f,) = [f for f in findings_of(r.stdout) if f["rule"] == "IC401"]
        assert what in f["message"] and "not loaded" in f["message"], f["message"]


@pytest.mark.parametrize("build", CORPUS, ids=lambda b: b.__name__)
def test_corpus_is_refused_without_torch_load(cli, tmp_path, marker, no_fallback, build):
    path, expected = build(tmp_path, marker)
    assert_refused(cli(path, "--no-probe", "--format", "json"), path, expected)
    assert not marker.exists()


@pytest.mark.parametrize("build", CORPUS, ids=lambda b: b.__name__)
def test_corpus_is_refused_with_torch_load_on(cli, tmp_path, marker, with_fallback, build):
    path, expected = build(tmp_path, marker)
    assert_refused(cli(path, "--no-probe", "--format", "json"), path, expected)


def test_corpus_in_real_processes_without_torch_load(tmp_path, marker):
    """The whole corpus, each in its own process with the fallback off: no marker, no traceback."""
    for build in CORPUS:
        d = tmp_path / build.__name__
        d.mkdir()
        path, _ = build(d, marker)
        r = subprocess.run([sys.executable, "-m", "initcheck", str(path), "--no-probe", "--format", "json"],
                           capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "INITCHECK_NO_TORCH_LOAD": "1"})
        assert r.returncode in (1, 2) and "Traceback" not in r.stderr, (build.__name__, r.stderr)
    assert not marker.exists()


def test_the_tricks_are_real(tmp_path, marker):
    """The corpus is not vacuous: torch's own reader resolves members case-insensitively, so it
    loads the hostile twin of data.pkl; and pickle.py and _pickle split a framed stream differently."""
    path, _ = case_colliding_members(tmp_path, tmp_path / "unused")
    r = _torch_load_in_subprocess(path)
    assert "GLOBAL posix.system" in r or "GLOBAL os.system" in r, r  # torch read DATA.PKL, not data.pkl
    body = pickle.dumps({"ww": 1}, protocol=4)  # PROTO FRAME(11) } MEMOIZE SHORT_BINUNICODE 'ww' ...
    short = body[:3] + struct.pack("<Q", 5) + body[11:]  # the frame now ends inside 'ww'
    assert pickle.loads(short) == {"ww": 1}  # _pickle reads across the frame end
    with pytest.raises(pickle.UnpicklingError, match="frame"):
        pickle._loads(short)  # pickle.py does not
    from initcheck.loader.pickle_scan import PickleScanError, globals_in_stream

    with pytest.raises(PickleScanError, match="crosses the end of its frame"):
        globals_in_stream(io.BytesIO(short), "t")


def _torch_load_in_subprocess(path) -> str:
    code = "import sys, torch\ntry:\n    print(torch.load(sys.argv[1], weights_only=True))\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, check=False).stdout


# --- benign layouts: read by initcheck alone, tensor for tensor what torch.load reads ------------

_DUMP = """
import sys, json, numpy as np, torch
from initcheck.dtypes import torch_to_numpy
from initcheck.loader.pickle_file import _flatten
out = {}
for path in sys.argv[2:]:
    for name, t in _flatten(torch.load(path, weights_only=True, map_location="cpu"), path)[0].items():
        arr, dtype = torch_to_numpy(t)
        out[path + "::" + name] = arr
        out[path + "::" + name + "::dtype"] = np.array(str(t.dtype).replace("torch.", ""))
np.savez(sys.argv[1], **out)
"""


def torch_views(tmp_path, paths) -> dict:
    """``path::name -> (dtype, array)`` as torch.load(weights_only=True) reads them, in a subprocess."""
    out = tmp_path / "torch_views.npz"
    r = subprocess.run([sys.executable, "-c", _DUMP, str(out), *map(str, paths)], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(out) as z:
        return {k: (str(z[k + "::dtype"]), z[k]) for k in z.files if not k.endswith("::dtype")}


def _benign_files(d):
    torch.manual_seed(0)
    base = torch.randn(6, 8)
    sd = {"f32": torch.randn(3, 4), "f16": torch.randn(5).half(), "bf16": torch.randn(4, 2).bfloat16(),
          "shared": base, "view": base[2:4], "transposed": base.t(), "strided": base[:, ::2], "param": torch.nn.Parameter(torch.randn(3)),
          "i64": torch.arange(5), "bool": torch.ones(3) > 0, "empty": torch.zeros(0, 3), "scalar": torch.tensor(3.0),
          "f64": torch.randn(2, dtype=torch.float64), "i8": torch.arange(4, dtype=torch.int8)}
    files = []
    for name, kw in [("zip.pt", {}), ("legacy.pt", {"_use_new_zipfile_serialization": False})]:
        torch.save(sd, d / name, **kw)
        files.append(d / name)
    torch.save({"state_dict": {"a.weight": base}, "epoch": 3}, d / "wrapped.ckpt")
    files.append(d / "wrapped.ckpt")
    torch.save(torch.randn(3, 3), d / "bare.pth")
    files.append(d / "bare.pth")
    # a hand-written archive: non-contiguous view with an offset, Python's zipfile (no alignment)
    torch_zip(d / "handmade.pt", _pickle({"w": _Tensor(_Storage("0", 6), 1, (2, 2), (1, 2))}),
              {"0": np.arange(6, dtype=np.float32).tobytes()})
    files.append(d / "handmade.pt")
    # a deflated data.pkl (miniz inflates it), and zip64 extra fields on every member
    src = zipfile.ZipFile(io.BytesIO(_saved({"w": torch.arange(6.0).reshape(2, 3)})))
    with zipfile.ZipFile(d / "deflated_pkl.pt", "w") as z:
        for n in src.namelist():
            z.writestr(n, src.read(n), compress_type=zipfile.ZIP_DEFLATED if n.endswith(".pkl") else zipfile.ZIP_STORED)
    with zipfile.ZipFile(d / "zip64.pt", "w") as z:
        for n in src.namelist():
            with z.open(n, "w", force_zip64=True) as f:
                f.write(src.read(n))
    files += [d / "deflated_pkl.pt", d / "zip64.pt"]
    # torch resolves data.pkl case-insensitively: so must we
    (d / "upper.pt").write_bytes(_saved({"w": torch.arange(4.0)}).replace(b"archive/data.pkl", b"archive/DATA.PKL"))
    files.append(d / "upper.pt")
    return files


def test_benign_layouts_agree_with_torch_load(tmp_path, no_fallback):
    from initcheck.loader import open_checkpoint

    d = tmp_path / "files"
    d.mkdir()
    files = _benign_files(d)
    theirs = torch_views(tmp_path, files)
    ours = {}
    for f in files:
        ckpt = open_checkpoint(f, safe_globals=["*"])
        assert all(r.reader == "initcheck" for r in ckpt.readers.values())
        for e, arr in ckpt.arrays():
            ours[f"{f}::{e.name}"] = (e.dtype, np.asarray(arr))
        ckpt.close()
    assert ours.keys() == theirs.keys()
    for k, (dtype, arr) in ours.items():
        tdtype, tarr = theirs[k]
        assert dtype == tdtype and arr.shape == tarr.shape and arr.dtype == tarr.dtype, k
        assert arr.tobytes() == np.ascontiguousarray(tarr).tobytes(), k


def test_sharded_bin_with_index_agrees_with_torch_load(tmp_path, no_fallback):
    from initcheck.loader import open_checkpoint

    d = tmp_path / "sharded"
    d.mkdir()
    torch.manual_seed(1)
    a, b = {"a.weight": torch.randn(8, 8), "a.bias": torch.zeros(8)}, {"b.weight": torch.randn(4, 8).half()}
    torch.save(a, d / "pytorch_model-00001-of-00002.bin")
    torch.save(b, d / "pytorch_model-00002-of-00002.bin")
    wm = {**{k: "pytorch_model-00001-of-00002.bin" for k in a}, **{k: "pytorch_model-00002-of-00002.bin" for k in b}}
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": wm}))
    ckpt = open_checkpoint(d)
    assert ckpt.all_mapped()
    theirs = torch_views(tmp_path, sorted(d.glob("*.bin")))
    for e, arr in ckpt.arrays():
        dtype, tarr = theirs[f"{d / e.file}::{e.name}"]
        assert e.dtype == dtype and arr.tobytes() == tarr.tobytes()
    ckpt.close()


def test_deflated_storages_go_to_torch_load_without_mmap(tmp_path, monkeypatch, with_fallback):
    """torch's mmap path takes a record's offset and ignores its compression: a deflated storage
    would be read as its compressed bytes. The fallback reads such files without mmap, and with
    the fallback off they are refused."""
    from initcheck.errors import InputError
    from initcheck.loader import open_checkpoint

    src = zipfile.ZipFile(io.BytesIO(_saved({"w": torch.arange(6.0).reshape(2, 3)})))
    with zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as z:
        for n in src.namelist():
            z.writestr(n, src.read(n))
    ckpt = open_checkpoint(tmp_path / "deflated.pt")
    assert ckpt.readers["deflated.pt"].reader == "torch.load"
    assert np.array_equal(ckpt.array(ckpt.entries[0]), np.arange(6.0, dtype=np.float32).reshape(2, 3))
    monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", "1")
    with pytest.raises(InputError, match="compressed storage records.*fallback is off"):
        open_checkpoint(tmp_path / "deflated.pt")


def test_protocol_4_and_5_checkpoints_read_without_torch(tmp_path, no_fallback):
    """torch.load(weights_only=True) has no FRAME opcode; well-framed pickles are still read, by us."""
    from initcheck.loader import open_checkpoint

    sd = {"w": torch.randn(3, 3), "h": torch.randn(2).half()}
    for proto in (4, 5):
        torch.save(sd, tmp_path / f"p{proto}.pt", pickle_protocol=proto)
        ckpt = open_checkpoint(tmp_path / f"p{proto}.pt")
        got = {e.name: np.asarray(a) for e, a in ckpt.arrays()}
        assert np.array_equal(got["w"], sd["w"].numpy()) and np.array_equal(got["h"], sd["h"].numpy())
        ckpt.close()


def test_reading_a_bin_does_not_import_torch(tmp_path):
    torch.save({"w": torch.randn(4, 4)}, tmp_path / "m.pt")
    code = ("import sys\nfrom initcheck.loader import open_checkpoint\nc = open_checkpoint(sys.argv[1])\n"
            "list(c.arrays())\nprint('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt")], capture_output=True, text=True, timeout=120, check=False)
    assert r.stdout.strip() == "False", r.stderr


def test_fallback_off_refuses_what_only_torch_reads(cli, tmp_path, monkeypatch, with_fallback):
    # fp8 "fnuz" bits are decoded through torch: the one benign layout our reader hands over
    torch.save({"w": torch.randn(4, 4).to(torch.float8_e4m3fnuz)}, tmp_path / "fnuz.pt")
    assert cli(tmp_path / "fnuz.pt", "--no-probe", "--format", "json").exit_code in (0, 1)
    monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", "1")
    r = cli(tmp_path / "fnuz.pt", "--no-probe", "--format", "json")
    assert r.exit_code == 2 and "fallback is off" in r.stderr and "fnuz.pt" in r.stderr


def test_old_torch_is_refused_before_torch_load(tmp_path):
    from initcheck.errors import InputError
    from initcheck.loader.pickle_file import check_torch_version

    for old in ("2.1.0", "2.5.1+cu121", "2.9.1"):
        with pytest.raises(InputError, match=r"torch>=2\.10"):
            check_torch_version("m.pt", old)
    check_torch_version("m.pt", "2.10.0")
    check_torch_version("m.pt", torch.__version__)


def test_real_process_refuses_the_case_collision(tmp_path, marker):
    path, _ = case_colliding_members(tmp_path, marker)
    r = run_process(path, "--no-probe")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "collide.pt" in r.stderr


# --- the scanner reads names as the loaders do ------------------------------------------------

@pytest.mark.parametrize("ops,name", [
    (b"c__builtin__\neval\n(S'1'\ntR.", "builtins.eval"),  # protocol 0 GLOBAL
    (b"\x80\x02c__builtin__\nexec\nq\x00.", "builtins.exec"),  # protocol 2
    (b"ccopy_reg\n_reconstructor\n.", "copyreg._reconstructor"),
    (b"c__builtin__\nxrange\n.", "builtins.range"),  # a renamed function, not only a renamed module
    (b"\x80\x04\x8c\x0b__builtin__\x8c\x04eval\x93.", "builtins.eval"),  # STACK_GLOBAL
])
def test_python2_names_are_mapped_before_judging(ops, name):
    from initcheck.loader.pickle_scan import globals_in_stream

    assert globals_in_stream(io.BytesIO(ops), "t") == [name]


def test_global_names_are_read_raw_not_unescaped():
    # pickletools undoes backslash escapes in GLOBAL names; pickle and torch read the bytes as UTF-8
    from initcheck.loader.pickle_scan import globals_in_stream

    assert globals_in_stream(io.BytesIO(b"co\\x73\nsystem\n."), "t") == ["o\\x73.system"]
