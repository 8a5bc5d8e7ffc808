"""``initcheck verify s3://bucket/prefix/ --attestation FILE``: the buyer's check of a delivery that lives in a
bucket, against a real S3-compatible server (moto's server mode, tests/moto_s3.py) on 127.0.0.1.

A tiny real BERT classifier (a side pickle and a file in a subfolder beside it) is audited once per module
from its local folder; the tests upload it, audit the bucket itself too, and change one object at a time:
verify must name exactly what changed, with the object's ETag, and the local verify's exit codes. Nothing
is staged on disk: each object is hashed from a ranged stream.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

import moto_s3
import pytest
import torch
from conftest import bert_config, save
from cryptography.hazmat.primitives.asymmetric import ec
from moto_s3 import upload
from test_attest import _write_key

endpoint, s3 = moto_s3.endpoint, moto_s3.s3   # the server and bucket fixtures, found here by name


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A delivery audited from its local folder: (work folder, model folder, attestation, private key, public key)."""
    import transformers
    from click.testing import CliRunner

    from initcheck.cli import main

    work = tmp_path_factory.mktemp("attest-remote")
    torch.manual_seed(0)
    model = save(transformers.BertForSequenceClassification(bert_config(num_labels=3)), work / "model")
    torch.save({"step": 3, "lr": torch.tensor([1e-4])}, model / "optimizer.pt")
    (model / "extra").mkdir()
    (model / "extra" / "notes.txt").write_text("vendor notes\n")
    priv, pub = _write_key(work, "vendor", ec.generate_private_key(ec.SECP256R1()))
    (work / "audit").mkdir()
    r = CliRunner().invoke(main, [str(a) for a in (model, "--no-probe", "-o", work / "audit/report.html",
                                                    "--attest", work / "audit/attestation.json", "--sign-key", priv)])
    assert r.exit_code == 0, r.output
    return work, model, work / "audit/attestation.json", priv, pub


NAMES = {"config.json", "model.safetensors", "optimizer.pt", "extra/notes.txt"}


def _subjects(att) -> dict:
    import base64

    st = json.loads(base64.b64decode(json.loads(att.read_text())["payload"]))
    return {s["name"]: s["digest"]["sha256"] for s in st["subject"]}


def _staging_left():
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("initcheck-remote-")}


def _one_line_exit_2(r, *words):
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.exit_code, r.stdout, err)
    assert len(err.splitlines()) == 1 and err.startswith("initcheck: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def _flipped(raw: bytes) -> bytes:
    b = bytearray(raw)
    b[-3] ^= 0x01   # one bit of the last tensor's data
    return bytes(b)


def test_bucket_attestation_verifies_and_names_a_flipped_byte(s3, cli, audited, tmp_path):
    """``check s3://... --attest`` then ``verify s3://...``: the same subjects as the local audit's, a clean
    pass, ``--recheck`` on the URL, and one flipped byte named with the object's new ETag (exit 1)."""
    _, model, local_att, priv, pub = audited
    b = s3.bucket
    upload(s3, model, f"{b}/drop")
    att = tmp_path / "bucket-attestation.json"
    r = cli(f"s3://{b}/drop/", "--no-probe", "--attest", att, "--sign-key", priv)
    assert r.exit_code == 0, r.output
    assert _subjects(att) == _subjects(local_att)   # streamed object digests == the local files' digests
    before = _staging_left()
    r = cli("verify", f"s3://{b}/drop/", "--attestation", att, "--key", pub)
    assert r.exit_code == 0, r.output
    assert "files: 4 attested, 4 match" in r.output and "signature: valid, ecdsa-p256-sha256" in r.output
    assert r.output.rstrip().endswith("verified: the bytes are the audited bytes, and the attestation is signed by the key given")
    assert _staging_left() <= before   # listed and streamed: nothing staged on disk
    r = cli("verify", f"s3://{b}/drop/", "--attestation", att, "--key", pub, "--recheck")
    assert r.exit_code == 0, r.output
    assert "recheck: same verdict as the audit" in r.output
    s3.pipe(f"{b}/drop/model.safetensors", _flipped((model / "model.safetensors").read_bytes()))
    etag = s3.info(f"{b}/drop/model.safetensors")["ETag"].strip('"')
    r = cli("verify", f"s3://{b}/drop/", "--attestation", att, "--key", pub)
    assert r.exit_code == 1, r.output
    want = _subjects(att)["model.safetensors"]
    assert f"  changed  model.safetensors (etag {etag}): sha256 {want[:12]}… attested, now " in r.output
    assert "files: 4 attested, 3 match, 1 changed, 0 added, 0 removed" in r.output
    assert "DIFFERS: 1 changed since the audit" in r.output


def test_local_attestation_verifies_its_uploaded_copy(s3, cli, audited):
    """The subjects are relative names: the local folder's attestation verifies against its copy in a bucket,
    and objects beside the prefix (``drop-other/``, the bucket's top level) are never listed."""
    _, model, att, _, pub = audited
    b = s3.bucket
    upload(s3, model, f"{b}/drop")
    s3.pipe(f"{b}/drop-other/model.safetensors", b"beside the prefix")
    s3.pipe(f"{b}/evil.pkl", b"outside the prefix")
    r = cli("verify", f"s3://{b}/drop", "--attestation", att, "--key", pub)
    assert r.exit_code == 0, r.output
    assert "files: 4 attested, 4 match" in r.output and "reports: report.html matches" in r.output
    assert "initcheck verify: s3://" in r.output


@pytest.mark.parametrize("change, line", [
    (lambda fs, p: fs.pipe(f"{p}/extra/payload.bin", b"\x80\x04N."), "  added    extra/payload.bin (etag {etag}): not in the attestation"),
    (lambda fs, p: fs.rm(f"{p}/optimizer.pt"), "  removed  optimizer.pt: attested, not in the delivery"),
], ids=["added-object", "deleted-object"])
def test_added_and_deleted_objects(s3, cli, audited, change, line):
    _, model, att, _, pub = audited
    prefix = f"{s3.bucket}/drop"
    upload(s3, model, prefix)
    change(s3, prefix)
    r = cli("verify", f"s3://{prefix}/", "--attestation", att, "--key", pub)
    assert r.exit_code == 1, r.output
    etag = s3.info(f"{prefix}/extra/payload.bin")["ETag"].strip('"') if "added" in line else ""
    assert line.format(etag=etag) in r.output
    assert "DIFFERS: 1 " in r.output and "changed  " not in r.output


def test_wrong_key_empty_prefix_and_bad_input_exit_2(s3, cli, audited, tmp_path, monkeypatch):
    """One line, exit 2: a wrong key, a prefix with nothing under it (or only a folder marker), --revision
    with a URL, and more objects than the pack's max_files (an attestation names every object)."""
    _, model, att, _, _ = audited
    b = s3.bucket
    upload(s3, model, f"{b}/drop")
    _, other = _write_key(tmp_path, "other", ec.generate_private_key(ec.SECP256R1()))
    _one_line_exit_2(cli("verify", f"s3://{b}/drop/", "--attestation", att, "--key", other), "wrong key")
    _one_line_exit_2(cli("verify", f"s3://{b}/nothing/", "--attestation", att), f"s3://{b}/nothing/", "no such object or prefix")
    s3.pipe(f"{b}/marker/", b"")   # a console's "create folder": a 0-byte key ending in /
    _one_line_exit_2(cli("verify", f"s3://{b}/marker/", "--attestation", att), f"s3://{b}/marker/")
    _one_line_exit_2(cli("verify", f"s3://{b}/drop/", "--attestation", att, "--revision", "main"), "--revision")
    from initcheck.attest import verify as V
    from initcheck.loader.limits import Limits

    monkeypatch.setattr(V, "_limits", lambda: Limits.from_scan({"max_files": 3}))
    _one_line_exit_2(cli("verify", f"s3://{b}/drop/", "--attestation", att), "holds 4 objects, over the rule pack's max_files (3)")


def test_denied_read_exits_2(s3, cli, audited, monkeypatch):
    """A buyer allowed to list the bucket but not to read its objects: one line naming the URL, exit 2
    (not "changed": the bucket, not the delivery, is in question)."""
    import moto.settings

    _, model, att, _, _ = audited
    upload(s3, model, f"{s3.bucket}/drop")
    key = moto_s3.list_only_user(s3)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)   # every request is authenticated now
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    _one_line_exit_2(cli("verify", f"s3://{s3.bucket}/drop/", "--attestation", att), f"s3://{s3.bucket}/drop/", "access denied")


def test_streamed_digests_in_small_reads(s3, tmp_path):
    """``sha256_objects`` itself: objects larger than a read hashed from a prefetched ranged stream, smaller
    ones whole and in parallel, an empty one too: each equals the file's SHA-256."""
    from transformers import BertForSequenceClassification

    from initcheck.loader.remote import Options, list_objects, sha256_objects

    folder = save(BertForSequenceClassification(bert_config(num_labels=3)), tmp_path / "m", max_shard_size="60KB")
    (folder / "empty.txt").write_bytes(b"")
    upload(s3, folder, f"{s3.bucket}/m")
    fs, objects = list_objects(f"s3://{s3.bucket}/m/")
    got = sha256_objects(fs, objects, Options(read_bytes=4096, prefetch_bytes=16384, connections=4))
    want = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}
    assert got == want and len(want) >= 4


def test_missing_s3fs_is_the_checks_line(audited):
    """Without s3fs (as if not installed, in a real process): the check's own one line, exit 2."""
    _, _, att, _, _ = audited
    code = ("import sys; sys.modules['s3fs'] = None; sys.argv = ['initcheck', *sys.argv[1:]]; "
            "from initcheck.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "verify", "s3://bucket/prefix/", "--attestation", str(att)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and r.stderr.strip() == (
        "initcheck: error: s3://bucket/prefix/: reading s3:// needs s3fs: pip install 'initcheck[s3]'"), r.stderr
