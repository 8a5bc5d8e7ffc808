"""Checkpoints in object storage (issue 28, part 2): ``initcheck s3://bucket/prefix/`` against a real
S3-compatible server (moto's server mode) started on 127.0.0.1 by these tests.

The same tiny real models are checked from a local folder and through ``s3://``: the findings,
tensor table, load report and probe must agree; the remote run must name only URLs (never its
staging folder), record each object's ETag beside its SHA-256, read nothing outside the prefix, and
turn every failure (nothing there, a missing shard, a truncated object, a denied request, a missing
package) into one line and exit 2.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

import moto_s3
import numpy as np
import pytest
import torch
from conftest import bert_config, edit_tensors, save
from moto_s3 import upload as _upload
from moto_s3 import zero_head_model as _zero_head_model

endpoint, s3 = moto_s3.endpoint, moto_s3.s3   # the server and bucket fixtures (tests/moto_s3.py), found here by name


def _vendor_folder(tmp_path, marker):
    """A vendor delivery: the model, a head file beside it and a hostile pickle (never run)."""
    folder = _zero_head_model(tmp_path / "model")
    torch.manual_seed(1)
    torch.save(torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.Linear(16, 1)).state_dict(), folder / "score_head.pt")
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "extra.pkl").write_bytes(pickle.dumps(Evil()))
    return folder


def _staging_left():
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("initcheck-remote-")}


def _same_check(a: dict, b: dict):
    """Two JSON reports of the same checkpoint agree on everything the check measured."""
    assert a["findings"] == b["findings"]
    assert a["tensors"] == b["tensors"]
    assert a["summary"] == b["summary"] and a["verdict"] == b["verdict"]
    assert a["load_report"] == b["load_report"]
    assert a["new"] == b["new"]
    drop = ("url", "etag", "version")
    assert [{k: v for k, v in f.items() if k not in drop} for f in a["target"]["files"]] == \
           [{k: v for k, v in f.items() if k not in drop} for f in b["target"]["files"]]


def test_s3_prefix_gives_the_local_findings(s3, cli, tmp_path, marker):
    """The whole pipeline through s3://, probe included: the same report as the local folder, under the URL."""
    folder = _vendor_folder(tmp_path, marker)
    b = s3.bucket
    _upload(s3, folder, f"{b}/run")
    s3.pipe(f"{b}/run-other/model.safetensors", b"outside the prefix")   # shares the prefix's leading characters
    s3.pipe(f"{b}/evil.pkl", b"outside the prefix")
    out = tmp_path / "out"
    out.mkdir()
    local = cli(folder, "-o", out / "local.html", "--format", "json")   # HTML: files hashed on both sides
    before = _staging_left()
    remote = cli(f"s3://{b}/run", "-o", out / "r.html", "-o", out / "r.sarif", "-v", "--format", "json")
    assert (local.exit_code, remote.exit_code) == (1, 1), remote.stderr
    a, r = json.loads(local.stdout), json.loads(remote.stdout)
    _same_check(a, r)
    assert r["probe"]["status"] == "ran" and r["probe"]["loss"] == a["probe"]["loss"]   # transformers read the real weights, not holes
    assert {f["rule"] for f in r["findings"] if f["severity"] == "error"} >= {"IC401"}
    assert r["target"]["path"] == f"s3://{b}/run"
    rows = {f["path"]: f for f in r["target"]["files"]}
    assert set(rows) == {"config.json", "model.safetensors", "score_head.pt", "extra.pkl"}   # nothing outside run/
    for name, row in rows.items():
        assert row["url"] == f"s3://{b}/run/{name}"
        assert row["etag"] == s3.info(f"{b}/run/{name}")["ETag"].strip('"')
    # hashes (HTML and SARIF ask for them): the objects' bytes, streamed or fetched whole
    html, sarif = (out / "r.html").read_text(), json.loads((out / "r.sarif").read_text())
    for name in ("model.safetensors", "score_head.pt", "config.json"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert digest in html
        assert rows["model.safetensors"]["etag"] in html
    hashes = {a["location"]["uri"]: a.get("hashes", {}).get("sha-256") for a in sarif["runs"][0]["artifacts"]}
    assert hashes["model.safetensors"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert sarif["runs"][0]["originalUriBaseIds"]["CHECKPOINT"]["uri"] == f"s3://{b}/run/"
    import jsonschema
    from test_report_sarif import SCHEMA

    jsonschema.Draft4Validator(SCHEMA).validate(sarif)
    # no staging path anywhere, and the staging folder is gone
    for text in (remote.stdout, remote.stderr, html, json.dumps(sarif)):
        assert "initcheck-remote-" not in text
    assert _staging_left() <= before
    # progress: bytes fetched and throughput
    assert "fetched " in remote.stderr and "/s)" in remote.stderr


def test_streamed_tensors_equal_the_files_bytes(s3, tmp_path):
    """The reader itself: every tensor of a sharded checkpoint read by range equals the file's, in file
    order from one stream (each byte fetched once, the hash taken on the way) and out of order."""
    from safetensors.numpy import load_file

    from initcheck.loader import open_checkpoint
    from initcheck.loader.limits import default_limits
    from initcheck.loader.remote import Options, stage

    folder = _zero_head_model(tmp_path / "m", max_shard_size="60KB")
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) >= 2
    _upload(s3, folder, f"{s3.bucket}/sharded")
    options = Options(read_bytes=4096, prefetch_bytes=16384, connections=4, head_bytes=256, fetch_max_bytes=1 << 30)
    for order in ("file", "reversed"):
        mirror = stage(f"s3://{s3.bucket}/sharded/", default_limits(), options, hashes=True)
        try:
            staged_size = sum(os.stat(os.path.join(mirror.folder, s)).st_blocks * 512 for s in shards)
            assert staged_size < sum((folder / s).stat().st_size for s in shards)   # headers only: sparse
            ckpt = open_checkpoint(mirror.target)
            entries = ckpt.entries if order == "file" else ckpt.entries[::-1]
            before = mirror.fetched
            expect = {}
            for s in shards:
                expect.update(load_file(folder / s))
            for e in entries:
                got = ckpt.array(e)
                want = expect[e.name]
                assert got.shape == want.shape and np.array_equal(got.view(np.uint8), want.view(np.uint8)), e.name
            data = sum(e.end - e.start for e in ckpt.entries)
            if order == "file":
                assert mirror.fetched - before == data   # one sequential pass, nothing fetched twice
            for s in shards:   # streamed hash in file order, a second streamed read otherwise
                reader = ckpt.readers[s]
                assert (reader.sha256 is not None) == (order == "file")
                assert reader.digest() == hashlib.sha256((folder / s).read_bytes()).hexdigest()
            ckpt.close()
        finally:
            mirror.close()
        assert not os.path.exists(mirror.folder)


def test_single_object_and_pickle_weights(s3, cli, tmp_path):
    """One object by URL (read by content), and a pytorch_model.bin folder fetched whole."""
    st = _zero_head_model(tmp_path / "st")
    pk = _zero_head_model(tmp_path / "pk", safe_serialization=False)
    _upload(s3, st, f"{s3.bucket}/st")
    _upload(s3, pk, f"{s3.bucket}/pk")
    s3.pipe(f"{s3.bucket}/loose/weights.model", (st / "model.safetensors").read_bytes())
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "weights.model").write_bytes((st / "model.safetensors").read_bytes())
    for local, url in ((lone / "weights.model", f"s3://{s3.bucket}/loose/weights.model"), (pk, f"s3://{s3.bucket}/pk/")):
        a, r = cli(local, "--format", "json", "--no-probe"), cli(url, "--format", "json", "--no-probe")
        assert (a.exit_code, r.exit_code) == (0, 0), r.stderr
        _same_check(json.loads(a.stdout), json.loads(r.stdout))
        assert json.loads(r.stdout)["target"]["path"] == url


def test_remote_base_matches_local_base(s3, cli, tmp_path):
    """``--base s3://...``: what changed against the pretrained checkpoint, as with a local base."""
    from transformers import BertModel

    torch.manual_seed(0)
    base = save(BertModel(bert_config()), tmp_path / "base")
    tuned = _zero_head_model(tmp_path / "tuned")

    def drift(sd):
        sd["bert.encoder.layer.0.attention.self.query.weight"] *= 1.01

    edit_tensors(tuned, drift)
    _upload(s3, base, f"{s3.bucket}/base")
    a = cli(tuned, "--base", base, "--format", "json", "--no-probe")
    r = cli(tuned, "--base", f"s3://{s3.bucket}/base/", "--format", "json", "--no-probe")
    assert a.exit_code == r.exit_code, r.stderr
    da, dr = json.loads(a.stdout), json.loads(r.stdout)
    _same_check(da, dr)
    assert [f["param"] for f in dr["findings"] if f["rule"] == "IC205"] == ["bert.encoder.layer.0.attention.self.query.weight"]
    assert "initcheck-remote-" not in r.stdout


def test_pack_limits_bound_what_is_fetched(s3, cli, tmp_path, marker):
    """The [scan] keys: an object over remote_fetch_max_bytes stays in the bucket and is listed as not
    scanned (IC401 fails closed on it); a prefix over max_files is cut as a local walk is (IC405)."""
    folder = _vendor_folder(tmp_path, marker)
    (folder / "logs").mkdir()
    for i in range(3):
        (folder / "logs" / f"{i}.txt").write_text("x")
    _upload(s3, folder, f"{s3.bucket}/v")
    head = (folder / "score_head.pt").stat().st_size
    pack = tmp_path / "pack.toml"
    pack.write_text(f'[pack]\nextends = "default"\n[scan]\nremote_fetch_max_bytes = {head - 1}\nmax_files = 6\n')
    r = cli(f"s3://{s3.bucket}/v/", "--rules", pack, "--no-probe", "--format", "json")
    d = json.loads(r.stdout)
    rows = {f["path"]: f for f in d["target"]["files"]}
    assert rows["score_head.pt"]["verdict"] == "not scanned" and "remote_fetch_max_bytes" in rows["score_head.pt"]["note"]
    assert not any(t["name"].startswith("score_head.pt:") for t in d["tensors"])   # never fetched, never judged
    assert [f["severity"] for f in d["findings"] if f["rule"] == "IC401" and f["file"] == "score_head.pt"] == ["error"]
    # 4 top-level objects always mirrored, then the first 2 nested ones: 7 listed, 6 kept
    assert sorted(p for p in rows if p.startswith("logs/")) == ["logs/0.txt", "logs/1.txt"]
    walk = [f for f in d["findings"] if f["rule"] == "IC405"]
    assert len(walk) == 1 and walk[0]["message"].startswith(f"s3://{s3.bucket}/v/: 7 files, over the rule pack's max_files (6)")


def _one_line_exit_2(result, *words):
    err = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, result.stdout, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert "initcheck-remote-" not in err
    return err


def test_missing_truncated_and_refused_objects(s3, cli, tmp_path):
    """Nothing under the prefix, an index naming a missing shard, a cut object, a key with '..'."""
    b = s3.bucket
    _one_line_exit_2(cli(f"s3://{b}/nothing/"), f"s3://{b}/nothing/", "no such object or prefix")
    sharded = _zero_head_model(tmp_path / "sharded", max_shard_size="60KB")
    _upload(s3, sharded, f"{b}/sharded")
    last = max(p.name for p in sharded.glob("*.safetensors"))
    s3.rm(f"{b}/sharded/{last}")
    _one_line_exit_2(cli(f"s3://{b}/sharded/", "--no-probe"), f"s3://{b}/sharded/model.safetensors.index.json", last)
    model = _zero_head_model(tmp_path / "cut")
    raw = (model / "model.safetensors").read_bytes()
    _upload(s3, model, f"{b}/cut")
    s3.pipe(f"{b}/cut/model.safetensors", raw[:len(raw) // 2])
    _one_line_exit_2(cli(f"s3://{b}/cut/", "--no-probe"), f"s3://{b}/cut/model.safetensors", "truncated")
    _upload(s3, model, f"{b}/dots")
    s3.pipe(f"{b}/dots/a/../b.json", b"{}")
    _one_line_exit_2(cli(f"s3://{b}/dots/", "--no-probe"), "refusing object key", "a/../b.json")
    s3.pipe(f"{b}/long/{'x' * 300}.json", b"{}")   # a legal key no local file name can hold
    _one_line_exit_2(cli(f"s3://{b}/long/"), f"s3://{b}/long/", "cannot stage", "File name too long")
    assert cli(f"s3://{b}/cut/", "--no-probe", "--revision", "main").exit_code == 2


def test_object_cut_while_streaming(s3, tmp_path):
    """An object replaced by a shorter one after it was listed: the range read comes back short, one line."""
    from initcheck.errors import InputError
    from initcheck.loader import open_checkpoint
    from initcheck.loader.limits import default_limits
    from initcheck.loader.remote import Options, stage

    model = _zero_head_model(tmp_path / "m")
    raw = (model / "model.safetensors").read_bytes()
    _upload(s3, model, f"{s3.bucket}/m")
    mirror = stage(f"s3://{s3.bucket}/m/", default_limits(), Options(read_bytes=4096, prefetch_bytes=8192))
    try:
        ckpt = open_checkpoint(mirror.target)
        s3.pipe(f"{s3.bucket}/m/model.safetensors", raw[:-1000])
        with pytest.raises(InputError, match="truncated while being read") as e:
            for entry in ckpt.entries:
                ckpt.array(entry)
        assert e.value.path == f"s3://{s3.bucket}/m/model.safetensors"
        ckpt.close()
    finally:
        mirror.close()


def test_denied_requests(s3, cli, tmp_path, monkeypatch):
    """With the server's auth on: unknown credentials are denied at the listing; a user allowed to list
    but not to read is denied at the first object. Each is one line naming the URL."""
    import moto.settings

    model = _zero_head_model(tmp_path / "m")
    _upload(s3, model, f"{s3.bucket}/m")
    key = moto_s3.list_only_user(s3)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)   # every request is authenticated now
    _one_line_exit_2(cli(f"s3://{s3.bucket}/m/", "--no-probe"), f"s3://{s3.bucket}/m/", "access denied")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    _one_line_exit_2(cli(f"s3://{s3.bucket}/m/", "--no-probe"), f"s3://{s3.bucket}/m/", "access denied")


def test_missing_package_and_unknown_protocol(tmp_path):
    """Without s3fs (as if not installed, in a real process) the line names the extra; an unknown scheme is one line."""
    code = ("import sys; sys.modules['s3fs'] = None; sys.argv = ['initcheck', *sys.argv[1:]]; "
            "from initcheck.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "s3://bucket/prefix/"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and r.stderr.strip() == (
        "initcheck: error: s3://bucket/prefix/: reading s3:// needs s3fs: pip install 'initcheck[s3]'"), r.stderr
    r = subprocess.run([sys.executable, "-c", code, "nosuchfs://bucket/x"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unknown storage protocol nosuchfs://" in r.stderr


def test_gcs_without_gcsfs(cli):
    """gcsfs is not installed here: gs:// names its extra, in one line."""
    import importlib.util

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    r = cli("gs://bucket/prefix/")
    assert r.exit_code == 2 and r.stderr.strip() == (
        "initcheck: error: gs://bucket/prefix/: reading gs:// needs gcsfs: pip install 'initcheck[gcs]'")


def test_object_overwritten_while_read_is_one_line(s3, tmp_path):
    """Replaced by an object of the same size after listing: no short read to notice, the ETag says it."""
    from initcheck import api
    from initcheck.config import settings_from
    from initcheck.errors import InputError
    from initcheck.loader.remote_run import run_remote
    from initcheck.packs import pack_for

    model = _zero_head_model(tmp_path / "m")
    raw = bytearray((model / "model.safetensors").read_bytes())
    _upload(s3, model, f"{s3.bucket}/m")
    raw[-1] ^= 1   # the last tensor's last byte: same size, other bytes

    def overwritten_then_run(target, settings):
        s3.pipe(f"{s3.bucket}/m/model.safetensors", bytes(raw))
        return api.run(target, settings)

    settings = settings_from(probe=False)
    with pytest.raises(InputError, match="changed while it was being read") as e:
        run_remote(f"s3://{s3.bucket}/m/", settings, pack_for(settings), overwritten_then_run)
    assert e.value.path == f"s3://{s3.bucket}/m/model.safetensors"
    # unchanged since listing now: checked, and it sees the flipped byte (the zero head's last value is not zero)
    report = run_remote(f"s3://{s3.bucket}/m/", settings, pack_for(settings), api.run)
    assert report.to_dict()["target"]["path"] == f"s3://{s3.bucket}/m/"
    assert report.scan.by_name["classifier.weight"].stats.zeros == report.scan.by_name["classifier.weight"].numel - 1


@pytest.mark.parametrize("layout", ["dcp", "run"])
def test_dcp_folder_and_training_run_in_a_bucket(s3, cli, tmp_path, layout):
    """A DCP checkpoint (config.json + .metadata + __0_0.distcp, the incident's zero head) and a training run
    (checkpoint-10/, checkpoint-20/, trainer_state.json: the post-mortem) read through s3:// give the local
    report: findings, tensor table, file table, and for the run its checkpoints and movement."""
    if layout == "dcp":
        from test_dcp import bert_pair

        _, folder = bert_pair(tmp_path / "pair", zero_head=True)
    else:
        from test_run_log import FALLING, _rows, bert_run

        folder = bert_run(tmp_path / "run", _rows(FALLING))
    _upload(s3, folder, f"{s3.bucket}/{layout}")
    local = cli(folder, "--no-probe", "--format", "json")
    remote = cli(f"s3://{s3.bucket}/{layout}/", "--no-probe", "--format", "json")
    assert remote.exit_code == local.exit_code, remote.stderr
    a, r = json.loads(local.stdout), json.loads(remote.stdout)
    _same_check(a, r)
    if layout == "dcp":
        assert ("IC102", "classifier.weight") in {(f["rule"], f["param"]) for f in r["findings"]}
        assert {f["path"]: f["verdict"] for f in r["target"]["files"]}["__0_0.distcp"] == "loaded"
    else:
        assert r["run"]["checkpoints"] == a["run"]["checkpoints"] and len(r["run"]["checkpoints"]) == 2
        assert r["run"]["movement"] == a["run"]["movement"] and r["run"]["movement"]
