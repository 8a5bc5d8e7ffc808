"""Signed audit attestations (issue 26): ``check --attest [--sign-key]`` then ``initcheck verify``.

One real tiny BERT classifier (with a side pickle file and a file in a subfolder) is audited once
per module with an ECDSA P-256 key; each test copies the delivery and changes one thing, and
verify must name exactly what changed, with the right exit code. A clean copy must verify.
"""

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import bert_config, run_process, save, tree_digest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from initcheck.attest import dsse, statement


def _write_key(folder: Path, name: str, key, password: bytes | None = None):
    enc = ser.BestAvailableEncryption(password) if password else ser.NoEncryption()
    (folder / f"{name}.pem").write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, enc))
    (folder / f"{name}.pub").write_bytes(key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    return folder / f"{name}.pem", folder / f"{name}.pub"


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _payload(envelope_file) -> dict:
    return json.loads(base64.b64decode(json.loads(Path(envelope_file).read_text())["payload"]))


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A delivery audited once: (work folder, model folder, attestation, private key, public key)."""
    import transformers

    work = tmp_path_factory.mktemp("attest")
    torch.manual_seed(0)
    model = save(transformers.BertForSequenceClassification(bert_config(num_labels=3)), work / "model")
    torch.save({"step": 3, "lr": torch.tensor([1e-4])}, model / "optimizer.pt")   # a side pickle: listed, now hashed too
    (model / "extra").mkdir()
    (model / "extra" / "notes.txt").write_text("vendor notes\n")
    priv, pub = _write_key(work, "vendor", ec.generate_private_key(ec.SECP256R1()))
    (work / "audit").mkdir()
    from click.testing import CliRunner

    from initcheck.cli import main

    before = tree_digest(model)
    r = CliRunner().invoke(main, [str(a) for a in (model, "--no-probe", "-o", work / "audit/report.html", "-o",
                                                    work / "audit/report.json", "-o", work / "audit/report.md",
                                                    "--attest", work / "audit/attestation.json", "--sign-key", priv)])
    assert r.exit_code == 0, r.output
    assert "signed attestation in" in r.output
    assert tree_digest(model) == before   # nothing written into the checked folder
    return work, model, work / "audit/attestation.json", priv, pub


def _delivery(audited, tmp_path) -> Path:
    """A fresh copy of the audited folder, to change one thing in."""
    return Path(shutil.copytree(audited[1], tmp_path / "delivery"))


def test_statement_binds_every_file_and_the_verdict(audited):
    work, model, att, _, pub = audited
    envelope = json.loads(att.read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json" and len(envelope["signatures"]) == 1
    st = _payload(att)
    report = json.loads((work / "audit/report.json").read_text())
    assert st["_type"] == "https://in-toto.io/Statement/v1" and st["predicateType"] == statement.PREDICATE_TYPE
    # subjects: exactly target.files, with the sha256 of the bytes on disk (side and subfolder files included)
    subjects = {s["name"]: s["digest"]["sha256"] for s in st["subject"]}
    assert [s["name"] for s in st["subject"]] == [f["path"] for f in report["target"]["files"]]
    assert set(subjects) == {"config.json", "model.safetensors", "optimizer.pt", "extra/notes.txt"}
    assert all(subjects[n] == _sha(model / n) for n in subjects)
    p = st["predicate"]
    assert (p["verdict"], p["fail_on"]) == (report["verdict"], report["fail_on"])
    assert {k: p["summary"][k] for k in ("error", "warning", "info")} == {k: report["summary"][k] for k in ("error", "warning", "info")}
    assert [(f["rule"], f["severity"], f["param"]) for f in p["findings"]] == \
        [(f["rule"], f["severity"], f["param"]) for f in report["findings"]]
    assert p["pack"]["name"] == "default" and p["pack"]["digest"].startswith("sha256:") and len(p["pack"]["digest"]) == 71
    assert p["tool"]["version"] == report["tool"]["version"] and p["tool"]["torch"] == report["tool"]["torch"]
    assert p["probe"]["settings"]["probe"] is False and p["probe"]["settings"]["steps"] == 20
    # the reports written, with the digests of their bytes
    assert {r["name"]: r["digest"]["sha256"] for r in p["reports"]} == \
        {n: _sha(work / "audit" / n) for n in ("report.html", "report.json", "report.md")}
    # keyid: SHA-256 of the public key's DER SubjectPublicKeyInfo
    der = ser.load_pem_public_key(pub.read_bytes()).public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    assert envelope["signatures"][0]["keyid"] == hashlib.sha256(der).hexdigest()


def test_reports_print_the_attestation_digest_and_signer(audited):
    work, _, att, _, pub = audited
    digest = statement.digest(_payload(att))
    keyid = "sha256:" + dsse.keyid(ser.load_pem_public_key(pub.read_bytes()))
    for name in ("report.html", "report.md", "report.json"):
        text = (work / "audit" / name).read_text()
        assert digest in text and keyid in text, name
    assert json.loads((work / "audit/report.json").read_text())["attestation"]["digest"] == digest


def test_verify_clean_delivery_passes(audited, cli, tmp_path):
    _, _, att, _, pub = audited
    delivery = _delivery(audited, tmp_path)
    r = cli("verify", delivery, "--attestation", att, "--key", pub)
    assert r.exit_code == 0, r.output
    assert "files: 4 attested, 4 match" in r.output
    assert "signature: valid, ecdsa-p256-sha256" in r.output
    assert "report.html matches; report.json matches; report.md matches" in r.output
    assert statement.digest(_payload(att)) in r.output
    assert "audit: PASS 0 error(s), 0 warning(s), 0 info (fail-on: error)" in r.output
    assert r.output.rstrip().endswith("verified: the bytes are the audited bytes, and the attestation is signed by the key given")


def _flip(folder):
    p = folder / "model.safetensors"
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x01   # one bit of the last tensor's data
    p.write_bytes(bytes(b))


@pytest.mark.parametrize("change, line", [
    (_flip, "changed  model.safetensors: sha256 "),
    (lambda f: (f / "extra" / "payload.bin").write_bytes(b"\x80\x04N."), "added    extra/payload.bin: not in the attestation"),
    (lambda f: (f / "optimizer.pt").unlink(), "removed  optimizer.pt: attested, not in the delivery"),
], ids=["flipped-byte", "added-file", "deleted-file"])
def test_verify_names_what_differs(audited, cli, tmp_path, change, line):
    _, _, att, _, pub = audited
    delivery = _delivery(audited, tmp_path)
    change(delivery)
    r = cli("verify", delivery, "--attestation", att, "--key", pub)
    assert r.exit_code == 1, r.output
    assert line in r.output
    # only that one thing: the other files still match
    assert "files: 4 attested, 3 match" in r.output or "files: 4 attested, 4 match, 0 changed, 1 added" in r.output
    assert "DIFFERS: 1 " in r.output


def test_edited_predicate_fails_the_signature(audited, cli, tmp_path):
    _, model, att, _, pub = audited
    env = json.loads(att.read_text())
    st = _payload(att)
    st["predicate"]["summary"]["error"] = 0
    st["predicate"]["verdict"] = "pass"
    st["predicate"]["findings"] = []
    st["predicate"]["created"] = "2020-01-01T00:00:00+00:00"   # an edit that changes the bytes whatever the verdict was
    env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    forged = tmp_path / "attestation.json"
    forged.write_text(json.dumps(env))
    r = cli("verify", model, "--attestation", forged, "--key", pub)
    assert r.exit_code == 2
    assert "the signature does not verify with the --key given" in r.output and "changed after it was signed" in r.output
    assert "Traceback" not in r.output


def test_wrong_key_exits_2_naming_both_keys(audited, cli, tmp_path):
    _, model, att, _, pub = audited
    _, other = _write_key(tmp_path, "other", ec.generate_private_key(ec.SECP256R1()))
    r = cli("verify", model, "--attestation", att, "--key", other)
    assert r.exit_code == 2
    want = dsse.keyid(ser.load_pem_public_key(other.read_bytes()))
    signed = dsse.keyid(ser.load_pem_public_key(pub.read_bytes()))
    assert f"wrong key: the envelope is signed by sha256:{signed}, not by the --key given (sha256:{want})" in r.output
    # a forger who copies the right keyid into the envelope still fails on the signature
    env = json.loads(att.read_text())
    env["signatures"][0]["keyid"] = want
    (tmp_path / "a.json").write_text(json.dumps(env))
    r = cli("verify", model, "--attestation", tmp_path / "a.json", "--key", other)
    assert r.exit_code == 2 and "does not verify" in r.output


def test_unsigned_verify_without_key_says_so(audited, cli, tmp_path):
    """No --key: the signature is named, not checked; the bytes still are."""
    _, model, att, _, _ = audited
    r = cli("verify", model, "--attestation", att)
    assert r.exit_code == 0 and "NOT checked: pass the signer's public key with --key" in r.output


@pytest.mark.parametrize("edit, message", [
    (lambda t: "{not json", "malformed attestation: not JSON"),
    (lambda t: "[1, 2]", "not a JSON object"),
    (lambda t: json.dumps(dict(json.loads(t), payload="%%%not base64%%%")), "malformed envelope: payload is not valid base64"),
    (lambda t: json.dumps(dict(json.loads(t), payloadType="text/plain")), "malformed envelope: payloadType is 'text/plain'"),
    (lambda t: json.dumps(dict(json.loads(t), signatures=[])), "malformed envelope: no signatures"),
    (lambda t: json.dumps(dict(json.loads(t), payload=base64.b64encode(b"\xff\xfe").decode())), "the payload is not JSON"),
], ids=["not-json", "not-object", "bad-base64", "payload-type", "no-signatures", "payload-not-json"])
def test_malformed_envelope_exits_2(audited, cli, tmp_path, edit, message):
    _, model, att, _, _ = audited
    bad = tmp_path / "bad.json"
    bad.write_text(edit(att.read_text()))
    r = cli("verify", model, "--attestation", bad)   # with --key, an edited payload fails its signature first
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and r.output.startswith("initcheck: error: ") and message in r.output, r.output


@pytest.mark.parametrize("edit, message", [
    (lambda st: st.update(_type="https://in-toto.io/Statement/v0.1"), "not an in-toto Statement v1"),
    (lambda st: st.update(predicateType="https://model_signing/signature/v1.0"), "is not initcheck's"),
    (lambda st: st["subject"][0].update(name="../../etc/passwd"), "is not a relative POSIX path"),
    (lambda st: st["subject"][0].update(digest={"sha256": "abc"}), "has no sha256 digest"),
    (lambda st: st["subject"].append(dict(st["subject"][0])), "is named twice"),
    (lambda st: st["predicate"].pop("summary"), "no error / warning / info counts"),
], ids=["type", "predicate-type", "escaping-name", "short-digest", "duplicate", "no-counts"])
def test_malformed_statement_exits_2(audited, cli, tmp_path, edit, message):
    _, model, att, _, _ = audited
    st = _payload(att)
    edit(st)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(st))
    r = cli("verify", model, "--attestation", bad)
    assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output


def test_edited_report_is_a_difference(audited, cli, tmp_path):
    work, model, _, _, pub = audited
    audit = Path(shutil.copytree(work / "audit", tmp_path / "audit"))
    md = audit / "report.md"
    md.write_text(md.read_text().replace("PASS", "PASS (reviewed)"))
    r = cli("verify", model, "--attestation", audit / "attestation.json", "--key", pub)
    assert r.exit_code == 1
    assert "report.md sha256 " in r.output and "edited since the audit" in r.output
    assert "report.html matches" in r.output
    (audit / "report.html").unlink()   # a buyer without the reports: not checked, not a difference
    md.unlink()
    r = cli("verify", model, "--attestation", audit / "attestation.json", "--key", pub)
    assert r.exit_code == 0 and "report.html not found beside the attestation: not checked" in r.output


def test_unsigned_attestation(cli, make_model, tmp_path):
    """No --sign-key: a bare Statement; verify checks the bytes, says nothing proves who wrote it, and an
    edited predicate is still caught through the reports that print the statement's digest."""
    model = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="m")
    out = tmp_path / "out"
    out.mkdir()
    r = cli(model, "--probe-steps", "3", "-o", out / "r.md", "-o", out / "r.json", "--attest", out / "a.json")
    assert r.exit_code == 0 and "unsigned attestation in" in r.output
    st = json.loads((out / "a.json").read_text())
    assert st["_type"] == "https://in-toto.io/Statement/v1" and "payloadType" not in st
    # the probe's settings and summary, as the report has them
    probe, trace = st["predicate"]["probe"], json.loads((out / "r.json").read_text())["probe"]
    assert probe["settings"]["steps"] == 3 and probe["summary"]["steps_run"] == len(trace["loss"]) == 3
    assert probe["summary"]["initial_loss"] == pytest.approx(trace["loss"][0], rel=1e-5)
    assert probe["summary"]["status"] == trace["status"] and probe["summary"]["task"] == "sequence-classification"
    assert "unsigned" in (out / "r.md").read_text()
    r = cli("verify", model, "--attestation", out / "a.json")
    assert r.exit_code == 0
    assert "signature: none: an unsigned in-toto Statement; nothing proves who wrote it" in r.output
    assert "it is unsigned, so nothing proves who wrote it" in r.output
    _, pub = _write_key(tmp_path, "k", ed25519.Ed25519PrivateKey.generate())
    r = cli("verify", model, "--attestation", out / "a.json", "--key", pub)
    assert r.exit_code == 2 and "is unsigned" in r.output and "--key was given" in r.output
    st["predicate"]["summary"]["warning"] = 7   # edited after the reports were written
    (out / "a.json").write_text(json.dumps(st))
    r = cli("verify", model, "--attestation", out / "a.json")
    assert r.exit_code == 2 and "the statement was edited after its reports were written: r.md prints sha256:" in r.output


def test_ed25519_and_encrypted_keys(cli, make_model, tmp_path, monkeypatch):
    model = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="m")
    priv, pub = _write_key(tmp_path, "ed", ed25519.Ed25519PrivateKey.generate(), password=b"s3cret")
    monkeypatch.delenv(dsse.PASSWORD_ENV, raising=False)
    r = cli(model, "--no-probe", "--format", "json", "-o", tmp_path / "r.json", "--attest", tmp_path / "a.json", "--sign-key", priv)
    assert r.exit_code == 2 and f"the key is encrypted; put its password in {dsse.PASSWORD_ENV}" in r.output
    assert not (tmp_path / "r.json").exists()   # refused before the scan
    monkeypatch.setenv(dsse.PASSWORD_ENV, "wrong")
    r = cli(model, "--no-probe", "--attest", tmp_path / "a.json", "--sign-key", priv)
    assert r.exit_code == 2 and "cannot decrypt the key" in r.output
    monkeypatch.setenv(dsse.PASSWORD_ENV, "s3cret")
    r = cli(model, "--no-probe", "-o", tmp_path / "r.json", "--attest", tmp_path / "a.json", "--sign-key", priv)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r.json").read_text())["attestation"]["algorithm"] == "ed25519"
    r = cli("verify", model, "--attestation", tmp_path / "a.json", "--key", pub)
    assert r.exit_code == 0 and "signature: valid, ed25519 key" in r.output


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "k.pem").write_text("not a key at all\n"), "not a PEM key file"),
    (lambda d: (d / "k.pem").write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())), "an RSA key; initcheck signs with ECDSA P-256 or Ed25519"),
    (lambda d: (d / "k.pem").write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())), "an EC key on secp384r1"),
    (lambda d: _write_key(d, "x", ec.generate_private_key(ec.SECP256R1())) and (d / "k.pem").write_bytes((d / "x.pub").read_bytes()),
     "this is a public key"),
    (lambda d: (d / "k.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "not a PEM private key"),
], ids=["text", "rsa", "p384", "public", "garbage-pem"])
def test_bad_sign_key_exits_2_before_the_scan(cli, make_model, tmp_path, make, message, monkeypatch):
    monkeypatch.delenv(dsse.PASSWORD_ENV, raising=False)
    model = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="m")
    make(tmp_path)
    r = cli(model, "--no-probe", "--attest", tmp_path / "a.json", "--sign-key", tmp_path / "k.pem")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output
    assert not (tmp_path / "a.json").exists()


def test_attest_usage_errors(cli, make_model, tmp_path):
    model = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="m")
    priv, _ = _write_key(tmp_path, "k", ec.generate_private_key(ec.SECP256R1()))
    r = cli(model, "--no-probe", "--sign-key", priv)
    assert r.exit_code == 2 and "--sign-key needs --attest FILE" in r.output
    r = cli(model, "--no-probe", "--attest", model / "attestation.json")
    assert r.exit_code == 2 and "initcheck never writes into the folder it checks" in r.output
    assert not (model / "attestation.json").exists()
    run = tmp_path / "run"
    shutil.copytree(model, run / "checkpoint-10")   # a training run: its checkpoint folder is what a buyer gets
    r = cli(run, "--no-probe", "--attest", tmp_path / "a.json")
    assert r.exit_code == 2 and "training-run folder; attest the checkpoint folder" in r.output


def test_plain_reports_still_hash_only_the_files_read(cli, audited, tmp_path):
    """Without --attest nothing changes: an HTML run hashes the weight and config files, not side files."""
    _, model, _, _, _ = audited
    r = cli(model, "--no-probe", "-o", tmp_path / "r.json", "-o", tmp_path / "r.html")
    assert r.exit_code == 0
    files = {f["path"]: f.get("sha256") for f in json.loads((tmp_path / "r.json").read_text())["target"]["files"]}
    assert files["model.safetensors"] == _sha(model / "model.safetensors") and files["config.json"]
    assert files["optimizer.pt"] is None and files["extra/notes.txt"] is None
    assert "attestation" not in json.loads((tmp_path / "r.json").read_text())


def test_single_file_target(cli, audited, tmp_path):
    _, model, _, priv, pub = audited
    single = tmp_path / "weights.safetensors"
    shutil.copy(model / "model.safetensors", single)
    r = cli(single, "--no-probe", "--attest", tmp_path / "a.json", "--sign-key", priv)
    assert r.exit_code == 0, r.output
    st = _payload(tmp_path / "a.json")
    assert st["subject"] == [{"name": "weights.safetensors", "digest": {"sha256": _sha(single)}}]
    assert st["predicate"]["target"]["kind"] == "file"
    assert cli("verify", single, "--attestation", tmp_path / "a.json", "--key", pub).exit_code == 0
    _flip_file = bytearray(single.read_bytes())
    _flip_file[-1] ^= 0x80
    single.write_bytes(bytes(_flip_file))
    r = cli("verify", single, "--attestation", tmp_path / "a.json", "--key", pub)
    assert r.exit_code == 1 and "changed  weights.safetensors" in r.output


def test_recheck_runs_the_attested_pack(cli, roberta_zero_head, tmp_path):
    """--recheck: the same verdict from the attested settings; a pack file must be given, and the same."""
    pack = tmp_path / "team.toml"
    pack.write_text('[pack]\nextends = "default"\n[rules.IC105]\nseverity = "warning"\n')
    out = tmp_path / "out"
    out.mkdir()
    r = cli(roberta_zero_head, "--no-probe", "--rules", pack, "--attest", out / "a.json")
    assert r.exit_code == 1   # the zero head: FAIL, attested as such
    p = json.loads((out / "a.json").read_text())["predicate"]
    assert p["verdict"] == "fail" and p["pack"]["name"] == "team" and any(f["rule"] == "IC102" for f in p["findings"])
    r = cli("verify", roberta_zero_head, "--attestation", out / "a.json", "--recheck")
    assert r.exit_code == 2 and "give that file with --rules FILE" in r.output
    r = cli("verify", roberta_zero_head, "--attestation", out / "a.json", "--recheck", "--rules", pack)
    assert r.exit_code == 0, r.output
    assert "audit: FAIL" in r.output and "recheck: FAIL" in r.output and "recheck: same verdict as the audit" in r.output
    other = tmp_path / "other.toml"
    other.write_text('[pack]\nextends = "default"\n[rules.IC102]\nseverity = "info"\n')
    r = cli("verify", roberta_zero_head, "--attestation", out / "a.json", "--recheck", "--rules", other)
    assert r.exit_code == 2 and "its thresholds differ" in r.output


def test_real_process_round_trip(audited, tmp_path):
    """As a buyer runs it: a real process, exit codes, and no traceback on a bad attestation."""
    _, model, att, _, pub = audited
    r = run_process("verify", model, "--attestation", att, "--key", pub)
    assert r.returncode == 0 and "verified:" in r.stdout, r.stderr
    (tmp_path / "junk.json").write_bytes(b"\x00\x01binary")
    r = run_process("verify", model, "--attestation", tmp_path / "junk.json")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("initcheck: error: ")


def test_symlink_out_of_the_folder_is_never_read(cli, audited, tmp_path):
    """A file that resolves outside the folder cannot be attested (it would be read), and verify lists it
    as added without reading it; the plain check is left alone (it lists the link, reads nothing)."""
    _, _, att, _, pub = audited
    secret = tmp_path / "secret.txt"
    secret.write_text("not the vendor's\n")
    delivery = _delivery(audited, tmp_path)
    (delivery / "link.txt").symlink_to(secret)
    assert cli(delivery, "--no-probe", "--format", "json").exit_code == 0
    r = cli(delivery, "--no-probe", "--attest", tmp_path / "a.json")
    assert r.exit_code == 2 and "link.txt" in r.output and "outside the model folder" in r.output
    assert not (tmp_path / "a.json").exists()
    r = cli("verify", delivery, "--attestation", att, "--key", pub)
    assert r.exit_code == 1 and "added    link.txt: not in the attestation" in r.output
