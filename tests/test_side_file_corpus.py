"""Side-file tricks against the loaders a victim runs (issue 22, items 1 and 2).

A generated corpus of files that hide a pickle where a name-based sniffer would not look: protocol
0/1 streams without ``PROTO`` under any name, ``.npy`` dtypes spelled every way numpy accepts,
Python 2 and oversized ``.npy`` headers, zips that only numpy opens, and streams that break off or
run past a scan bound *after* their payload. Each file's payload is harmless: ``builtins.open(marker,
"w")``, which creates a marker file of its own under tmp_path/markers.

Agreement: a separate process loads every file with ``pickle.load``, ``numpy.load(allow_pickle=True)``
(every ``.npz`` member read) and ``torch.load(weights_only=False)``; each marker that appears names a
file a victim would have run. initcheck must report every one of them as an IC401 error, and stay
silent on the harmless look-alikes (text that starts with an opcode, plain arrays, an empty zip).
"""

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import torch
from conftest import findings_of, tree_digest
from safetensors.torch import save_file

# every loader a victim may call on a side file; each failure is expected and ignored
_LOADERS = r"""
import pickle, sys, warnings
import numpy as np
import torch
warnings.filterwarnings("ignore")
for path in sys.argv[1:]:
    for how in ("pickle", "numpy", "torch"):
        try:
            if how == "pickle":
                with open(path, "rb") as f:
                    pickle.load(f)
            elif how == "numpy":
                r = np.load(path, allow_pickle=True)
                for k in getattr(r, "files", []):
                    try:
                        r[k]
                    except Exception:
                        pass
            else:
                torch.load(path, weights_only=False)
        except BaseException:
            pass
"""


def _su(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _bu(s: str) -> bytes:  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _p0(m) -> bytes:
    """builtins.open(m, "w") in protocol 0 (GLOBAL, MARK, STRING, TUPLE, REDUCE), no STOP."""
    return b"cbuiltins\nopen\n(S'" + str(m).encode() + b"'\nS'w'\ntR"


def _p1(m) -> bytes:
    return b"cbuiltins\nopen\n" + _bu(str(m)) + _bu("w") + b"\x86R"


def _p4(m) -> bytes:
    return _su("builtins") + _su("open") + b"\x93" + _su(str(m)) + _su("w") + b"\x86R"


def _npy(descr: str, data: bytes, shape="(1,)", version=1, pad=0) -> bytes:
    header = "{'descr': %s, 'fortran_order': False, 'shape': %s, }" % (descr, shape) + " " * pad
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header.encode("latin1") + data


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


def _frame_cut(body: bytes) -> bytes:
    """A protocol 4 pickle whose FRAME ends two bytes inside an opcode (C pickle only buffers frames)."""
    return b"\x80\x04\x95" + struct.pack("<Q", len(body) - 2) + body


def hostile(m) -> dict:
    """name -> bytes; ``m(name)`` is the marker path that file's payload creates."""
    files = {
        # any protocol, any name: pickle.load / torch.load / np.load(allow_pickle) read from byte 0
        "optimizer.pt": b"\x80\x01" + _p1(m("optimizer.pt")) + b".",
        "p0.txt": _p0(m("p0.txt")) + b".",
        "noext": _p0(m("noext")) + b".",
        "meta.json": _p0(m("meta.json")) + b".",
        "stack.bin": _p4(m("stack.bin")) + b".",  # starts with \x8c
        "binunicode.pt": _bu("x") + b"0" + _p1(m("binunicode.pt")) + b".",
        "int.dat": b"K\x010" + _p1(m("int.dat")) + b".",
        "true": b"\x880" + _p1(m("true")) + b".",
        "list.bin": b"]0" + _p1(m("list.bin")) + b".",
        "dict.txt": b"}0" + _p1(m("dict.txt")) + b".",
        "mark.pth": b"(1" + _p1(m("mark.pth")) + b".",
        "inst.txt": b"(S'" + str(m("inst.txt")).encode() + b"'\nS'w'\nibuiltins\nopen\n.",
        # fail closed: the stream breaks off, or is refused by our scan only, after the payload
        "hex_tail.pt": b"\x80\x02" + _p1(m("hex_tail.pt")) + b"0I0x10\n.",
        "hex_tail_p0": _p0(m("hex_tail_p0")) + b"0I0x10\n.",
        "nonascii_tail.pkl": b"\x80\x02" + _p1(m("nonascii_tail.pkl")) + b"0S'\xc3\xa9'\n0N.",
        "nonascii_first.pkl": b"\x80\x02S'\xc3\xa9'\n0" + _p1(m("nonascii_first.pkl")) + b".",
        "frame.pkl": _frame_cut(_p4(m("frame.pkl")) + b"."),
        "padded.pkl": b"\x80\x02" + _p1(m("padded.pkl")) + b"0" + b"N0" * (_MAX_OPS // 2 + 1) + b".",  # past the bound
        "truncated.bin": b"\x80\x02" + _p1(m("truncated.bin")) + b"0]",
        # .npy as numpy reads it: every spelling of an object dtype, Python 2 and oversized headers
        "object.npy": _npy("'object'", b"\x80\x02" + _p1(m("object.npy")) + b"."),
        "bar_o.npy": _npy("'|O'", b"\x80\x02" + _p1(m("bar_o.npy")) + b"."),
        "capital_o.npy": _npy("'O'", b"\x80\x02" + _p1(m("capital_o.npy")) + b"."),
        "struct.npy": _npy("[('a', '<f4'), ('b', 'O')]", b"\x80\x02" + _p1(m("struct.npy")) + b"."),
        "nested.npy": _npy("[('s', [('x', '<i4'), ('y', '|O')])]", b"\x80\x02" + _p1(m("nested.npy")) + b"."),
        "py2.npy": _npy("'|O'", b"\x80\x02" + _p1(m("py2.npy")) + b".", shape="(1L,)"),
        "big_header.npy": _npy("'|O'", b"\x80\x02" + _p1(m("big_header.npy")) + b".", version=2, pad=70_000),
        "huge_header.npy": _npy("'|O'", b"\x80\x02" + _p1(m("huge_header.npy")) + b".", version=2, pad=2_200_000),
        "not_npy.npy": b"\x80\x02" + _p1(m("not_npy.npy")) + b".",  # no \x93NUMPY: np.load falls back to pickle.load
        # zips: numpy reads any member with the .npy magic, whatever its name, and opens a file that
        # starts with an end-of-archive record as a zip (Python's zipfile finds the directory at the end)
        "arrays.npz": _zip({"a.npy": _npy("'|O'", b"\x80\x02" + _p1(m("arrays.npz")) + b".")}),
        "noname.npz": _zip({"b": _npy("'|O'", b"\x80\x02" + _p1(m("noname.npz")) + b".")}),
        "prefixed.npz": b"PK\x05\x06" + b"\x00" * 18 + _zip({"c.npy": _npy("'|O'", b"\x80\x02" + _p1(m("prefixed.npz")) + b".")}),
    }
    files["legacy.tar"] = _tar({"storages": b"\x80\x02" + _p1(m("legacy.tar")) + b".", "tensors": b"\x80\x02]."})
    return files


def _tar(members: dict) -> bytes:
    """torch's pre-1.0 format: torch.load(weights_only=False) unpickles the tar's "storages" member first."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for k, v in members.items():
            info = tarfile.TarInfo(k)
            info.size = len(v)
            t.addfile(info, io.BytesIO(v))
    return buf.getvalue()


def harmless() -> dict:
    """Look-alikes that no loader runs: initcheck must say nothing about them."""
    buf = io.BytesIO()
    np.save(buf, np.arange(4, dtype=np.float32))
    plain = buf.getvalue()
    buf = io.BytesIO()
    np.savez(buf, a=np.ones(3))
    return {
        "notes.txt": b"(c) 2026, not a pickle\n",
        "cos": b"cos\nsystem\n is not a pickle: it breaks off before any call\n",
        "data.csv": b"0.5,1.5\n2,3\n",
        "vocab.txt": b"[PAD]\n[UNK]\nhello\n",
        "plain.npy": plain,
        "plain.npz": buf.getvalue(),
        "struct_plain.npy": _npy("[('a', '<f4'), ('b', '<i8')]", b"\x00" * 12),
        "py2_plain.npy": _npy("'<f4'", b"\x00" * 4, shape="(1L,)"),
        "empty.npz": b"PK\x05\x06" + b"\x00" * 18,
        "list.json": b"[1, 2, 3]\n",
    }


_MAX_OPS = 100_000  # the pack's pickle_max_opcodes in this test (default 2M: the same path, 20x the bytes)


def _executed(tmp_path, folder, names) -> set:
    """The files whose payload ran under pickle.load, np.load or torch.load, in a separate process."""
    subprocess.run([sys.executable, "-c", _LOADERS, *[str(folder / n) for n in names]], cwd=tmp_path,
                   capture_output=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return {n for n in names if (tmp_path / "markers" / n).exists()}


def test_no_file_that_a_loader_runs_is_called_clean(cli, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    d = tmp_path / "ckpt"
    d.mkdir()
    save_file({"w": torch.randn(8, 8) * 0.05, "b": torch.zeros(8)}, d / "model.safetensors")
    bad, good = hostile(lambda n: markers / n), harmless()
    for name, data in {**bad, **good}.items():
        (d / name).write_bytes(data)
    before = tree_digest(d)
    pack = tmp_path / "pack.toml"
    pack.write_text(f'[pack]\nextends = "default"\n\n[scan]\npickle_max_opcodes = {_MAX_OPS}\n')
    r = cli(d, "--no-probe", "--format", "json", "--rules", str(pack))
    assert "Traceback" not in (r.stderr or ""), r.stderr
    assert tree_digest(d) == before and not any(markers.iterdir())  # the scan ran nothing
    ic401 = [f for f in findings_of(r.stdout) if f["rule"] == "IC401"]
    errors = {f["file"] for f in ic401 if f["severity"] == "error"}
    ran = _executed(tmp_path, d, sorted(bad) + sorted(good))
    assert len(ran) >= 25, sorted(set(bad) - ran)  # the corpus is live: these do run
    assert not ran & set(good), ran & set(good)
    assert sorted(ran - errors) == []  # 0 files called clean that a loader would run
    assert {f["file"] for f in ic401} & set(good) == set(), [f["message"] for f in ic401 if f["file"] in good]
    table = {f["path"]: f for f in json.loads(r.stdout)["target"]["files"]}
    assert all(table[n]["verdict"] in ("no pickle", "clean") for n in good), {n: table[n] for n in good}


def test_globals_read_before_a_break_are_kept(tmp_path):
    """Fail closed at the parse: the error carries what was read before it (issue 22 item 2)."""
    from initcheck.errors import InputError
    from initcheck.loader.limits import Limits
    from initcheck.loader.pickle_scan import parse_file

    small = Limits.from_scan({"pickle_max_opcodes": 1000})
    cases = {
        "garbage.pkl": (b"\x80\x02" + _p1("m") + b"0\xff", small),  # an unknown opcode after the call
        "bound.pkl": (b"\x80\x02" + _p1("m") + b"0" + b"N0" * 600 + b".", small),  # past the opcode bound
        # a legacy torch file (magic number first) whose second pickle calls, then breaks off
        "legacy.pt": (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b"\x80\x02" + _p1("m") + b"0}", small),
    }
    for name, (data, limits) in cases.items():
        (tmp_path / name).write_bytes(data)
        try:
            parse_file(str(tmp_path / name), name, limits)
        except InputError as e:
            assert "builtins.open" in e.globals, (name, e.globals, e.problem)
        else:
            raise AssertionError(f"{name} parsed whole")


def test_payload_past_a_bound_is_an_error_never_clean(tmp_path, cli):
    """A payload after the opcode bound is unseen: the file is 'not scanned', and an IC401 error
    (fail closed: pickle.load would run what follows). A stream that merely breaks off stays a warning."""
    from initcheck.loader.limits import Limits
    from initcheck.loader.side_files import scan_side_file

    p = tmp_path / "late.pkl"
    p.write_bytes(b"\x80\x02" + b"N0" * 600 + _p1("m") + b".")
    found = scan_side_file(p, "late.pkl", Limits.from_scan({"pickle_max_opcodes": 1000}))
    assert found.format == "pickle" and "pickle_max_opcodes" in found.problem and found.globals == [] and found.bound

    d = tmp_path / "m"
    d.mkdir()
    save_file({"w": torch.randn(8, 8)}, d / "model.safetensors")
    (d / "late.pkl").write_bytes(b"\x80\x02" + b"N0" * 1_000_001 + _p1("m") + b".")   # over the default 2M opcodes
    (d / "cut.pkl").write_bytes(b"\x80\x02N0N0")                                       # breaks off: runs nothing
    r = cli(str(d), "--no-probe", "--format", "json")
    ic401 = {f["file"]: f["severity"] for f in json.loads(r.stdout)["findings"] if f["rule"] == "IC401"}
    assert ic401.get("late.pkl") == "error" and r.exit_code == 1, ic401
    assert ic401.get("cut.pkl") == "warning", ic401
