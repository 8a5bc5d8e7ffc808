"""Malformed and hostile input: one line naming the file, exit 2, no traceback, no large
allocation, bounded time; nothing read outside the model folder; nothing written into it."""

import json
import os
import struct
import time

import pytest
import torch
from safetensors.torch import save_file

from conftest import bert_config, run_process, tree_digest


def write_st(path, header, data=b"", raw_header=None, length=None):
    """Write a safetensors file by hand (so that it can lie)."""
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def good_st(path, n=4):
    save_file({"w": torch.randn(n, n) * 0.05, "b": torch.zeros(n)}, path)
    return path


def assert_exit2(r, *names):
    """Exit 2 with exactly one line on stderr, naming ``names``; no traceback."""
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.exit_code, r.stdout[-500:], err)
    assert err.startswith("initcheck: error:") and "\n" not in err, err
    assert "Traceback" not in err and "--debug shows the traceback" not in err, err  # a real message, not a crash
    for n in names:
        assert n in err, (n, err)
    return err


@pytest.fixture
def check(cli):
    def run(path, *extra):
        return cli(path, "--no-probe", "--format", "json", *extra)

    return run


# --- folders and configs ------------------------------------------------------------------------

def test_empty_folder(check, tmp_path):
    assert_exit2(check(tmp_path), str(tmp_path), "empty folder")


def test_folder_without_weights(check, tmp_path):
    (tmp_path / "README.md").write_text("hi")
    assert_exit2(check(tmp_path), "no checkpoint found")


def test_missing_path(check, tmp_path):
    assert_exit2(check(tmp_path / "nope"), "nope", "no such file")


@pytest.mark.parametrize("text,why", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    ('{"initializer_range": "0.02"}', "initializer_range"),
    ('{"architectures": "Bert"}', "architectures"),
    ('{"architectures": [1]}', "architectures"),
    ('{"tie_word_embeddings": 1}', "tie_word_embeddings"),
    ('{"vocab_size": 1e9999}', "vocab_size"),
    ("[" * 100000, "not valid JSON"),
    ('{"vocab_size": ' + "9" * 5000 + "}", "not valid JSON"),
])
def test_broken_config_json_beside_weights(check, tmp_path, text, why):
    good_st(tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_exit2(check(tmp_path), "config.json", why)


def test_missing_config_json_is_legal(check, tmp_path):
    good_st(tmp_path / "model.safetensors")
    assert check(tmp_path).exit_code in (0, 1)
    assert check(tmp_path / "model.safetensors").exit_code in (0, 1)


def test_config_json_that_is_a_folder(check, tmp_path):
    good_st(tmp_path / "model.safetensors")
    (tmp_path / "config.json").mkdir()
    assert check(tmp_path).exit_code in (0, 1)  # not a file: the folder has no config.json


def test_folder_named_like_a_checkpoint(check, tmp_path):
    (tmp_path / "model.safetensors").mkdir()
    assert_exit2(check(tmp_path), str(tmp_path))
    assert_exit2(check(tmp_path / "model.safetensors"), "model.safetensors")


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "x.pt"])
def test_text_file_renamed_as_checkpoint(check, tmp_path, name):
    (tmp_path / name).write_text("this is not a checkpoint\n" * 10)
    assert_exit2(check(tmp_path), name)
    assert_exit2(check(tmp_path / name), name)


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_empty_file(check, tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert_exit2(check(tmp_path), name)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(check, tmp_path):
    p = good_st(tmp_path / "model.safetensors")
    p.chmod(0)
    assert_exit2(check(tmp_path), "model.safetensors")


# --- safetensors headers ------------------------------------------------------------------------

def test_truncated_safetensors(check, tmp_path):
    p = good_st(tmp_path / "model.safetensors", n=64)
    p.write_bytes(p.read_bytes()[:-100])
    assert_exit2(check(tmp_path), "model.safetensors", "truncated")


def test_truncated_inside_the_header(check, tmp_path):
    p = good_st(tmp_path / "model.safetensors")
    p.write_bytes(p.read_bytes()[:20])
    assert_exit2(check(tmp_path), "model.safetensors", "beyond the end")


def test_header_length_beyond_eof(check, tmp_path):
    write_st(tmp_path / "model.safetensors", {}, length=2**63)
    assert_exit2(check(tmp_path), "model.safetensors", "beyond the end")


def test_offsets_beyond_eof(check, tmp_path):
    write_st(tmp_path / "model.safetensors", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)
    assert_exit2(check(tmp_path), "model.safetensors", "'w'", "beyond")


@pytest.mark.parametrize("offsets", [[0, 4 * 2**40], [0, 16]])
def test_header_claiming_a_4_tb_tensor(check, tmp_path, offsets):
    # 2**20 x 2**20 float32 = 4 TiB, in a 100-byte file: refused from the header, nothing allocated
    write_st(tmp_path / "model.safetensors", {"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": offsets}}, b"\0" * 16)
    t = time.perf_counter()
    assert_exit2(check(tmp_path), "model.safetensors", "'w'")
    assert time.perf_counter() - t < 10


@pytest.mark.parametrize("spec,why", [
    ({"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}, "unknown dtype"),
    ({"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}, "unknown dtype"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "shape"),
    ({"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}, "shape"),
    ({"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}, "shape"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, "data_offsets"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [0]}, "data_offsets"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [0, True]}, "data_offsets"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "needs 8 bytes"),
    ([1, 2], "not an object"),
])
def test_bad_header_entries(check, tmp_path, spec, why):
    write_st(tmp_path / "model.safetensors", {"w": spec}, b"\0" * 8)
    assert_exit2(check(tmp_path), "model.safetensors", why)


@pytest.mark.parametrize("raw,why", [
    (b"\xff\xfe not utf-8", "UTF-8"),
    (b'{"w": ', "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b"[" * 200000, "not valid JSON"),
    (b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}', "not valid JSON"),
    (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "twice"),
    (b'{"__metadata__": {"a": 1}}', "__metadata__"),
    (b'{"\\ud800": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "UTF-8"),
    (b'{"a\\u001b[2Jb": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "control characters"),
    (b'{"": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', "empty"),
])
def test_hostile_raw_headers(check, tmp_path, raw, why):
    write_st(tmp_path / "model.safetensors", None, b"\0" * 8, raw_header=raw)
    assert_exit2(check(tmp_path), "model.safetensors", why)


def test_huge_tensor_name(check, tmp_path):
    write_st(tmp_path / "model.safetensors", {"x" * 100000: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    err = assert_exit2(check(tmp_path), "model.safetensors", "characters")
    assert len(err) < 400


def test_overlapping_tensors(check, tmp_path):
    h = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    write_st(tmp_path / "model.safetensors", h, b"\0" * 12)
    assert_exit2(check(tmp_path), "model.safetensors", "overlap")


def test_zero_size_tensors_are_checked(check, tmp_path):
    save_file({"empty": torch.zeros(0, 8), "w": torch.randn(8, 8) * 0.05, "none": torch.zeros(0)}, tmp_path / "model.safetensors")
    r = check(tmp_path)
    assert r.exit_code in (0, 1), r.stderr
    assert json.loads(r.stdout)["target"]["files"][0]["path"] == "model.safetensors"


def test_zero_size_tensor_in_a_pickle(check, tmp_path):
    torch.save({"empty": torch.zeros(0, 8), "w": torch.randn(8, 8) * 0.05}, tmp_path / "m.pt")
    assert check(tmp_path / "m.pt").exit_code in (0, 1)


@pytest.mark.parametrize("tensor,why", [
    (torch.zeros(2, dtype=torch.complex64), "no tensors except complex"),  # complex tensors are metadata: skipped
    (torch.zeros(4, 4).to_sparse(), "unsupported tensor kind"),
    (torch.empty(2, 2, device="meta"), "unsupported tensor kind"),
])
def test_unreadable_tensors_in_a_pickle(check, tmp_path, tensor, why):
    torch.save({"w": tensor}, tmp_path / "m.pt")
    assert_exit2(check(tmp_path / "m.pt"), "m.pt", why)


# --- shards and indexes -------------------------------------------------------------------------

def _index(folder, wm, name="model.safetensors.index.json"):
    (folder / name).write_text(json.dumps({"metadata": {}, "weight_map": wm}))


def test_duplicate_tensor_across_shards(check, tmp_path):
    good_st(tmp_path / "model-00001-of-00002.safetensors")
    good_st(tmp_path / "model-00002-of-00002.safetensors")
    _index(tmp_path, {"w": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"})
    assert_exit2(check(tmp_path), "model-0000", "also appears")


def test_index_naming_a_missing_shard(check, tmp_path):
    good_st(tmp_path / "model-00001-of-00002.safetensors")
    _index(tmp_path, {"w": "model-00001-of-00002.safetensors", "x": "model-00002-of-00002.safetensors"})
    assert_exit2(check(tmp_path), "model.safetensors.index.json", "model-00002-of-00002.safetensors", "missing")


def test_index_naming_a_tensor_absent_from_its_shard(check, tmp_path):
    good_st(tmp_path / "model-00001-of-00001.safetensors")
    _index(tmp_path, {"w": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors",
                      "ghost": "model-00001-of-00001.safetensors"})
    assert_exit2(check(tmp_path), "model-00001-of-00001.safetensors", "ghost")


@pytest.mark.parametrize("index", [
    "{", "[]", '{"weight_map": []}', '{"weight_map": {}}', '{"weight_map": {"w": 3}}',
])
def test_broken_index(check, tmp_path, index):
    good_st(tmp_path / "model-00001-of-00001.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(index)
    assert_exit2(check(tmp_path), "model.safetensors.index.json")


@pytest.fixture
def outside(tmp_path):
    """A real, valid checkpoint next to (not inside) the model folder."""
    d = tmp_path / "outside"
    d.mkdir()
    good_st(d / "model.safetensors")
    return d / "model.safetensors"


@pytest.mark.parametrize("shard", ["../outside/model.safetensors", "sub/../../outside/model.safetensors", "ABS",
                                   "model.safetensors\0.txt", "C:\\outside\\model.safetensors", "config.json"])
def test_index_escaping_the_folder_is_refused(check, tmp_path, outside, shard):
    m = tmp_path / "m"
    m.mkdir()
    (m / "config.json").write_text("{}")
    _index(m, {"w": str(outside) if shard == "ABS" else shard})
    assert_exit2(check(m), "model.safetensors.index.json", "refusing")


def test_symlinked_shard_pointing_outside_is_refused(check, tmp_path, outside):
    m = tmp_path / "m"
    m.mkdir()
    (m / "model-00001-of-00001.safetensors").symlink_to(outside)
    _index(m, {"w": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"})
    assert_exit2(check(m), "model-00001-of-00001.safetensors", "outside the model folder")


def test_symlinked_weights_and_config_pointing_outside_are_refused(check, tmp_path, outside):
    m = tmp_path / "m"
    m.mkdir()
    (m / "model.safetensors").symlink_to(outside)
    assert_exit2(check(m), "model.safetensors", "outside the model folder")
    (m / "model.safetensors").unlink()
    good_st(m / "model.safetensors")
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (m / "config.json").symlink_to(secret)
    assert_exit2(check(m), "config.json", "outside the model folder")


def test_symlinked_subfolder_escape_is_refused(check, tmp_path, outside):
    m = tmp_path / "m"
    m.mkdir()
    (m / "sub").symlink_to(outside.parent, target_is_directory=True)
    _index(m, {"w": "sub/model.safetensors", "b": "sub/model.safetensors"})
    assert_exit2(check(m), "outside the model folder")


def test_hf_cache_snapshot_symlinks_are_allowed(check, tmp_path):
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    good_st(repo / "blobs" / "0123abcd")
    (snap / "model.safetensors").symlink_to("../../blobs/0123abcd")
    assert check(snap).exit_code in (0, 1)


def test_user_named_symlink_file_is_read(check, tmp_path, outside):
    link = tmp_path / "link.safetensors"
    link.symlink_to(outside)
    assert check(link).exit_code in (0, 1)


# --- read-only ----------------------------------------------------------------------------------

def test_normal_run_leaves_the_folder_byte_identical(cli, make_model, tmp_path):
    d = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="ro")
    before = tree_digest(d)
    from initcheck.report import FORMATS

    outs = tmp_path / "reports"
    outs.mkdir()
    args = []
    for fmt in FORMATS:
        args += ["--format", fmt, "-o", outs / f"report.{fmt}"]
    r = cli(d, "--no-probe", *args)
    assert r.exit_code in (0, 1), r.stderr
    r = cli(d, "--no-probe")
    assert r.exit_code in (0, 1)
    assert tree_digest(d) == before
    assert sorted(p.name for p in d.rglob("*")) == sorted(before)


def test_hostile_runs_leave_the_folder_byte_identical(check, tmp_path, outside):
    m = tmp_path / "m"
    m.mkdir()
    write_st(m / "model.safetensors", {"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 16]}}, b"\0" * 16)
    (m / "config.json").write_text("{broken")
    _index(m, {"w": "../outside/model.safetensors"})
    before, before_out = tree_digest(m), tree_digest(outside.parent)
    for target in (m, m / "model.safetensors"):
        assert check(target).exit_code == 2
    assert tree_digest(m) == before and tree_digest(outside.parent) == before_out


def test_malformed_inputs_in_a_real_process_never_print_a_traceback(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 2**40) + b"{}")
    r = run_process(tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "model.safetensors" in r.stderr
