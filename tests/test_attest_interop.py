"""Interop with the OpenSSF model-signing project: its signature of a folder and initcheck's attestation of
the same folder, signed with the same ECDSA P-256 key, name the same SHA-256 for every file.

model-signing's bundle is a Sigstore bundle whose DSSE envelope holds an in-toto Statement; its
predicate lists each file as ``{name, algorithm, digest}`` (the statement's one subject is the
digest of that list). initcheck's subjects are the files themselves.
"""

import base64
import json

import pytest
import torch
from conftest import bert_config, save
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec

model_signing = pytest.importorskip("model_signing", reason="the test extras install model-signing")


def test_model_signing_names_the_same_digests(cli, tmp_path):
    import transformers

    torch.manual_seed(0)
    model = save(transformers.BertForSequenceClassification(bert_config(num_labels=2)), tmp_path / "model")
    (model / "tokenizer").mkdir()
    (model / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k.pem").write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))

    # the model's files signed with model-signing's Python API, and verified by it
    model_signing.signing.Config().use_elliptic_key_signer(private_key=tmp_path / "k.pem").sign(model, tmp_path / "model.sig")
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "k.pub").verify(model, tmp_path / "model.sig")
    bundle = json.loads((tmp_path / "model.sig").read_text())
    theirs_st = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert theirs_st["_type"] == "https://in-toto.io/Statement/v1"
    theirs = {r["name"]: r["digest"] for r in theirs_st["predicate"]["resources"] if r["algorithm"] == "sha256"}

    # the audit of the same folder, signed with the same key
    r = cli(model, "--no-probe", "--attest", tmp_path / "audit.json", "--sign-key", tmp_path / "k.pem")
    assert r.exit_code == 0, r.output
    ours_st = json.loads(base64.b64decode(json.loads((tmp_path / "audit.json").read_text())["payload"]))
    ours = {s["name"]: s["digest"]["sha256"] for s in ours_st["subject"]}

    assert set(ours) == {"config.json", "model.safetensors", "tokenizer/vocab.txt"}
    assert ours == theirs   # file for file, the same names (relative, POSIX) and the same SHA-256
    assert bundle["dsseEnvelope"]["payloadType"] == json.loads((tmp_path / "audit.json").read_text())["payloadType"]
    assert cli("verify", model, "--attestation", tmp_path / "audit.json", "--key", tmp_path / "k.pub").exit_code == 0


def test_envelopes_cross_check_with_sigstore_dsse(cli, tmp_path):
    """Our DSSE envelope verifies with sigstore-python's DSSE code (a second implementation of PAE and the
    envelope), and an envelope it signs over our statement verifies with ``initcheck verify``."""
    sdsse = pytest.importorskip("sigstore.dsse", reason="sigstore comes with model-signing")
    import transformers

    torch.manual_seed(0)
    model = save(transformers.BertForSequenceClassification(bert_config(num_labels=2)), tmp_path / "model")
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "k.pem").write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    out = tmp_path / "out"
    out.mkdir()
    assert cli(model, "--no-probe", "--attest", out / "ours.json", "--sign-key", tmp_path / "k.pem").exit_code == 0
    ours = (out / "ours.json").read_text()
    payload = sdsse._verify(key.public_key(), sdsse.Envelope._from_json(ours))   # raises on a bad signature
    assert payload == base64.b64decode(json.loads(ours)["payload"])

    theirs = sdsse._sign(key, sdsse.Statement(payload))   # sigstore signs the same statement
    (out / "theirs.json").write_text(theirs.to_json())
    r = cli("verify", model, "--attestation", out / "theirs.json", "--key", tmp_path / "k.pub")
    assert r.exit_code == 0 and "signature: valid, ecdsa-p256-sha256" in r.output, r.output
    # and a signature sigstore made over other bytes does not pass as ours
    forged = json.loads(theirs.to_json())
    forged["payload"] = json.loads(ours)["payload"].replace("A", "B", 1)
    (out / "forged.json").write_text(json.dumps(forged))
    r = cli("verify", model, "--attestation", out / "forged.json", "--key", tmp_path / "k.pub")
    assert r.exit_code == 2
