"""DSSE envelopes (https://github.com/secure-systems-lab/dsse) signed with ECDSA P-256 or Ed25519.

The signature is over PAE("DSSEv1" SP len(type) SP type SP len(body) SP body); ECDSA signs with
SHA-256 and its signature is DER-encoded, Ed25519's is the raw 64 bytes; both base64 in the envelope.
A key's id (``keyid``, and the fingerprint the reports print) is the SHA-256 of its DER
SubjectPublicKeyInfo, in hex: ``openssl pkey -pubin -in PUB.pem -outform DER | sha256sum`` gives it.

Keys are PEM files (PKCS#8 or traditional private keys, SubjectPublicKeyInfo public keys). An
encrypted private key's password comes from ``INITCHECK_SIGN_KEY_PASSWORD``, never a prompt.
"""

import base64
import binascii
import hashlib
import os

from ..errors import InputError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
PASSWORD_ENV = "INITCHECK_SIGN_KEY_PASSWORD"
_KEY_MAX_BYTES = 1 << 16   # a PEM key is a few hundred bytes; a bound so a wrong path is not read whole


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is actually signed."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    except ImportError:
        raise InputError(None, "signing and checking signatures need the cryptography package: "
                               "pip install 'initcheck[attest]'") from None
    return serialization, ec, ed25519


def _read_pem(path, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read(_KEY_MAX_BYTES + 1)
    except OSError as e:
        raise InputError(path, f"{flag}: cannot read the key file: {e.strerror}") from None
    if len(raw) > _KEY_MAX_BYTES or b"-----BEGIN" not in raw:
        raise InputError(path, f"{flag}: not a PEM key file (expected -----BEGIN ... KEY-----)")
    return raw


def _check_kind(key, path, flag: str):
    _, ec, ed25519 = _crypto()
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name == "secp256r1":
        return
    name = type(key).__name__.replace("PrivateKey", "").replace("PublicKey", "")
    kind = f"an EC key on {key.curve.name}" if hasattr(key, "curve") else f"an {name} key" if name[:1] in "AEIOR" else f"a {name} key"
    raise InputError(path, f"{flag}: {kind}; initcheck signs with ECDSA P-256 or Ed25519 keys")


def load_private_key(path):
    """The signing key in ``path`` (PEM). Any problem is one line naming the file (exit 2)."""
    serialization, _, _ = _crypto()
    raw = _read_pem(path, "--sign-key")
    if b"PUBLIC KEY-----" in raw and b"PRIVATE KEY-----" not in raw:
        raise InputError(path, "--sign-key: this is a public key; signing needs the private key (give the public one to buyers)")
    password = os.environ.get(PASSWORD_ENV)
    try:
        key = serialization.load_pem_private_key(raw, password=password.encode() if password else None)
    except TypeError:   # encrypted without a password, or a password for a key that has none
        if password:
            raise InputError(path, f"--sign-key: the key is not encrypted, but {PASSWORD_ENV} is set; unset it") from None
        raise InputError(path, f"--sign-key: the key is encrypted; put its password in {PASSWORD_ENV}") from None
    except ValueError as e:
        if password and any(w in str(e).lower() for w in ("password", "decrypt")):
            raise InputError(path, f"--sign-key: cannot decrypt the key with the password in {PASSWORD_ENV}") from None
        raise InputError(path, "--sign-key: not a PEM private key that can be read") from None
    except Exception as e:  # noqa: BLE001 - cryptography raises a few kinds for unsupported keys
        raise InputError(path, f"--sign-key: cannot read the key ({type(e).__name__})") from None
    _check_kind(key, path, "--sign-key")
    return key


def load_public_key(path):
    """The public key in ``path`` (PEM SubjectPublicKeyInfo) that an envelope must be signed with."""
    serialization, _, _ = _crypto()
    raw = _read_pem(path, "--key")
    if b"PRIVATE KEY-----" in raw:
        raise InputError(path, "--key: this is a private key; verify takes the signer's public key "
                               "(openssl pkey -in KEY.pem -pubout -out PUB.pem)")
    try:
        key = serialization.load_pem_public_key(raw)
    except Exception:  # noqa: BLE001 - ValueError, UnsupportedAlgorithm: not a key we can read
        raise InputError(path, "--key: not a PEM public key that can be read") from None
    _check_kind(key, path, "--key")
    return key


def keyid(public_key) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo, hex: the envelope's keyid and the reports' fingerprint."""
    serialization, _, _ = _crypto()
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def algorithm(key) -> str:
    """``ecdsa-p256-sha256`` or ``ed25519``."""
    _, ec, _ = _crypto()
    return "ecdsa-p256-sha256" if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) else "ed25519"


def sign(body: bytes, private_key) -> dict:
    """The DSSE envelope of ``body`` (the statement's bytes), signed with ``private_key``."""
    from cryptography.hazmat.primitives import hashes

    _, ec, _ = _crypto()
    msg = pae(PAYLOAD_TYPE, body)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        sig = private_key.sign(msg, ec.ECDSA(hashes.SHA256()))
    else:
        sig = private_key.sign(msg)
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(body).decode("ascii"),
            "signatures": [{"keyid": keyid(private_key.public_key()), "sig": base64.b64encode(sig).decode("ascii")}]}


def b64(text, what: str, path) -> bytes:
    """Base64 (standard or URL-safe, padded or not) as DSSE allows; anything else is malformed."""
    if not isinstance(text, str):
        raise InputError(path, f"malformed envelope: {what} is not a base64 string")
    s = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(path, f"malformed envelope: {what} is not valid base64") from None


def signature_ok(envelope_payload: bytes, payload_type: str, sig: bytes, public_key) -> bool:
    """Whether ``sig`` signs PAE(payload_type, payload) under ``public_key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes

    _, ec, _ = _crypto()
    msg = pae(payload_type, envelope_payload)
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
        else:
            public_key.verify(sig, msg)
    except InvalidSignature:
        return False
    return True
