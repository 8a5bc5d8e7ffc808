"""Complete walks and bounds before work (issue 22, items 5, 7 and 8).

A folder too large to walk whole is said (IC405, exit 2 under a ci pack), a run folder is walked
whole (root and every checkpoint), and each bomb finishes in under 10 s and 1 GB, or exits 2 with
one line. Bombs run as real processes: their time and peak memory (``ru_maxrss`` of the child) are
measured, not estimated.
"""

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile

import pytest
import torch
from conftest import findings_of, measured_run, tree_digest
from safetensors.torch import save_file

MAX_S, MAX_RSS_MB = 10.0, 1024

def _bounded(*args):
    code, out, err, took, rss = measured_run(*args)
    print(f"{args[0]}: {took:.2f} s, peak RSS {rss:.0f} MB, exit {code}")  # the figures, with pytest -s
    assert took < MAX_S and rss < MAX_RSS_MB, (took, rss, err[-300:])
    assert "Traceback" not in err, err[-2000:]
    if code == 2:
        assert err.startswith("initcheck: error: ") and "\n" not in err, err
    return code, out, err


def _weights(d):
    d.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.randn(8, 8) * 0.05, "b": torch.zeros(8)}, d / "model.safetensors")


def _evil(marker) -> bytes:
    """os.system("touch marker") in protocol 2: harmless if it ever ran, and the test would see it."""
    cmd = f"touch {marker}".encode()
    return b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85R."


def _pack(tmp_path, extends, **scan) -> str:
    p = tmp_path / f"{extends}-small.toml"
    p.write_text(f'[pack]\nextends = "{extends}"\n\n[scan]\n' + "".join(f"{k} = {v}\n" for k, v in scan.items()))
    return str(p)


# --- complete walks -----------------------------------------------------------------------------

def test_walk_past_max_files_is_a_finding_naming_count_and_limit(cli, tmp_path):
    d = tmp_path / "ckpt"
    _weights(d)
    for i in range(7):
        (d / f"note{i}.txt").write_text("x")
    (d / "zz_evil.pkl").write_bytes(_evil(tmp_path / "m"))  # sorted last: past the limit
    r = cli(d, "--no-probe", "--format", "json", "--rules", _pack(tmp_path, "default", max_files=5))
    found = findings_of(r.stdout)
    (walk,) = [f for f in found if f["rule"] == "IC405"]
    assert walk["severity"] == "warning" and "9 files" in walk["message"] and "max_files (5)" in walk["message"], walk
    assert r.exit_code == 0 and not (tmp_path / "m").exists()


def test_folder_of_exactly_max_files_is_walked_whole_and_silent(cli, tmp_path):
    d = tmp_path / "ckpt"
    _weights(d)
    for i in range(3):
        (d / f"note{i}.txt").write_text("x")
    (d / "zz_evil.pkl").write_bytes(_evil(tmp_path / "m"))
    r = cli(d, "--no-probe", "--format", "json", "--rules", _pack(tmp_path, "default", max_files=5))
    found = findings_of(r.stdout)
    assert not [f for f in found if f["rule"] == "IC405"]
    assert [f["file"] for f in found if f["rule"] == "IC401"] == ["zz_evil.pkl"]


def test_walk_past_max_files_under_the_ci_pack_exits_2_with_one_line(cli, tmp_path):
    d = tmp_path / "ckpt"
    _weights(d)
    for i in range(7):
        (d / f"note{i}.txt").write_text("x")
    r = cli(d, "--no-probe", "--rules", _pack(tmp_path, "ci", max_files=5))
    err = r.stderr.strip()
    assert r.exit_code == 2 and "\n" not in err and "ckpt" in err and "8 files" in err and "max_files (5)" in err, err


def _run_folder(root, hostile_ckpt=None, hostile_root=None):
    for step in (10, 20):
        c = root / f"checkpoint-{step}"
        _weights(c)
        log = [{"step": s, "loss": 1.0 / s} for s in range(1, step + 1)]
        (c / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": log}))
        torch.save({"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}, c / "optimizer.pt")
    if hostile_ckpt:
        (root / "checkpoint-10" / "optimizer.pt").write_bytes(hostile_ckpt)
    if hostile_root:
        (root / "evil.pkl").write_bytes(hostile_root)


def test_run_folder_walk_covers_every_checkpoint_and_the_root(cli, tmp_path):
    root = tmp_path / "run"
    _run_folder(root, _evil(tmp_path / "m1"), _evil(tmp_path / "m2"))
    before = tree_digest(root)
    r = cli(root, "--no-probe", "--format", "json")
    assert "Traceback" not in (r.stderr or ""), r.stderr
    errors = {f["file"] for f in findings_of(r.stdout) if f["rule"] == "IC401" and f["severity"] == "error"}
    assert errors == {"checkpoint-10/optimizer.pt", "evil.pkl"}, errors
    assert r.exit_code == 1 and tree_digest(root) == before
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_clean_run_folder_has_no_ic401(cli, tmp_path):
    root = tmp_path / "run"
    _run_folder(root)
    r = cli(root, "--no-probe", "--format", "json")
    assert [f for f in findings_of(r.stdout) if f["rule"] == "IC401"] == []
    table = {f["path"]: f["verdict"] for f in json.loads(r.stdout)["target"]["files"]}
    assert table["checkpoint-10/optimizer.pt"] == "clean" and table["optimizer.pt"] == "clean", table


# --- bombs: under 10 s and 1 GB, or exit 2 with one line -----------------------------------------

def _deflated_storage_bin(path, numel=20_000_000):
    """A torch.save archive whose one storage (numel float32 zeros, 80 MB) is deflated ~1000:1."""
    raw = io.BytesIO()
    torch.save({"w": torch.zeros(numel)}, raw)
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            method = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0)), data, compress_type=method)


def test_zip_bomb_storage_is_refused_from_the_directory(tmp_path):
    d = tmp_path / "bomb"
    d.mkdir()
    _deflated_storage_bin(d / "pytorch_model.bin")
    assert (d / "pytorch_model.bin").stat().st_size < 1_000_000
    code, _out, err = _bounded(d, "--no-probe")
    assert code == 2 and "zip_max_ratio" in err and "pytorch_model.bin" in err, err


def test_zip_bomb_as_a_side_file_is_not_read(tmp_path):
    d = tmp_path / "ckpt"
    _weights(d)
    _deflated_storage_bin(d / "optimizer.pt")
    code, out, _err = _bounded(d, "--no-probe", "--format", "json")
    (f,) = [f for f in findings_of(out) if f["rule"] == "IC401"]
    assert f["file"] == "optimizer.pt" and "zip_max_ratio" in f["message"], f


def test_deflated_archive_at_an_ordinary_ratio_is_read(cli, tmp_path):
    """The look-alike: a small deflated torch archive (ratio ~1.1:1) is not a bomb."""
    d = tmp_path / "ok"
    d.mkdir()
    raw = io.BytesIO()
    torch.save({"w": torch.randn(64, 64)}, raw)
    with zipfile.ZipFile(raw) as src, zipfile.ZipFile(d / "pytorch_model.bin", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    r = cli(d, "--no-probe", "--format", "json")
    assert r.exit_code in (0, 1) and "zip_max_ratio" not in r.stdout, r.stderr


def test_sparse_trainer_state_is_not_read_whole(tmp_path):
    root = tmp_path / "run"
    _run_folder(root)
    with open(root / "checkpoint-20" / "trainer_state.json", "r+b") as f:
        f.truncate(3 << 30)  # 3 GB, sparse: costs nothing on disk
    _bounded(root, "--no-probe", "--format", "json")


def test_sparse_json_side_file_is_sniffed_not_read(tmp_path):
    d = tmp_path / "ckpt"
    _weights(d)
    with open(d / "big.json", "wb") as f:
        f.write(b"{")
        f.truncate(3 << 30)
    code, _out, _err = _bounded(d, "--no-probe", "--format", "json")
    assert code == 0


@pytest.mark.parametrize("count", [1_000_000])
def test_too_many_tensors_is_refused_before_measuring(tmp_path, count):
    d = tmp_path / "many"
    d.mkdir()
    raw = b"{" + b",".join(b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(count)) + b"}"
    (d / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    code, _out, err = _bounded(d, "--no-probe")
    assert code == 2 and "max_tensors (200000)" in err and "model.safetensors" in err, err


def _safetensors(path, numel, sparse):
    """One F16 tensor of ``numel`` values: written out, or left as a hole (a sparse file)."""
    header = json.dumps({"w": {"dtype": "F16", "shape": [numel], "data_offsets": [0, numel * 2]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        if sparse:
            f.truncate(8 + len(header) + numel * 2)
        else:
            f.write(os.urandom(numel * 2))


def test_sparse_32_gb_safetensors_is_refused_in_seconds(tmp_path):
    d = tmp_path / "huge"
    d.mkdir()
    _safetensors(d / "model.safetensors", (32 << 30) // 2, sparse=True)
    code, _out, err = _bounded(d, "--no-probe")
    assert code == 2 and "sparse_max_ratio" in err and "model.safetensors" in err, err


@pytest.mark.parametrize("sparse", [True, False])
def test_sparse_check_refuses_holes_not_stored_data(cli, tmp_path, sparse):
    """The look-alike: the same size stored byte for byte is read (a small threshold from a pack)."""
    d = tmp_path / "w"
    d.mkdir()
    _safetensors(d / "model.safetensors", 1 << 20, sparse=sparse)
    r = cli(d, "--no-probe", "--rules", _pack(tmp_path, "default", sparse_min_bytes=1000))
    assert (r.exit_code == 2) == sparse and ("sparse_max_ratio" in r.stderr) == sparse, (r.exit_code, r.stderr)


def test_measure_reports_peak_memory_of_the_child():
    """The harness itself: ru_maxrss of a child that holds 200 MB is seen (so < 1 GB means something)."""
    r = subprocess.run([sys.executable, "-c", "import resource, subprocess, sys; subprocess.run([sys.executable, '-c', "
                        "'b = bytearray(200 << 20)']); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"],
                       capture_output=True, text=True, timeout=60)
    assert int(r.stdout) > 200 * 1024
    assert resource.RUSAGE_CHILDREN  # (Linux: kilobytes)
