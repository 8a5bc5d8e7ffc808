"""The vendor's side: ``initcheck check PATH --attest FILE [--sign-key KEY.pem]``.

Order matters: the key is read before the scan (a wrong key fails in a second, not after an
hour); the statement is built from the finished report, and its digest and the signer's
fingerprint go into the reports (``data["attestation"]``) before they are rendered; the report
files are then written, and the attestation last, naming each report with its digest.
"""

import json
import os

from ..errors import InputError
from . import dsse, statement


class Attestation:
    """One ``--attest FILE`` of a check.

    Args:
        path: where the attestation goes (checked like every output: not inside the checked folder).
        key_file: a PEM private key (ECDSA P-256 or Ed25519) to sign it with, or None (an unsigned Statement).
    """

    def __init__(self, path, key_file=None):
        self.path = str(path)
        self.key = dsse.load_private_key(key_file) if key_file else None
        self.statement = None

    def bind(self, report, data: dict) -> dict:
        """Build the statement from the finished report; returns what the reports show about it."""
        ckpt = report.scan.checkpoint
        if report.scan.facts.get("run") is not None:
            raise InputError(data["target"]["path"], "--attest: this is a training-run folder; attest the checkpoint "
                                                     "folder a buyer receives (e.g. its checkpoint-N/)")
        if ckpt is None:
            raise InputError(None, "--attest needs a checkpoint on disk")
        if ckpt.walk_limit:
            raise InputError(ckpt.walk_limit["folder"], f"--attest: holds more files than the rule pack's max_files "
                                                        f"({ckpt.walk_limit['limit']}): an attestation must name every file")
        self.statement = statement.build(data, report)
        out = {"file": self.path, "digest": statement.digest(self.statement), "signed": self.key is not None,
               "signer": None, "algorithm": None}
        if self.key is not None:
            out["signer"] = "sha256:" + dsse.keyid(self.key.public_key())
            out["algorithm"] = dsse.algorithm(self.key)
        return out

    def write(self, reports: list) -> str:
        """Write the attestation, naming ``reports`` (``[(format, path)]``, already written) with their
        digests; signed into a DSSE envelope when there is a key. Returns a phrase for the verdict line."""
        full = statement.with_reports(self.statement, reports, self.path)
        body = json.dumps(full, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
        doc = body if self.key is None else (json.dumps(dsse.sign(body, self.key), indent=2) + "\n").encode("ascii")
        try:
            with open(self.path, "wb") as f:
                f.write(doc)
        except OSError as e:
            raise InputError(self.path, f"cannot be written: {e.strerror}") from None
        return f"{'signed' if self.key is not None else 'unsigned'} attestation in {self.path}"


def start(attest, sign_key, target):
    """The ``Attestation`` a check asked for, or None; usage errors before any work."""
    if sign_key and not attest:
        raise InputError(None, "--sign-key needs --attest FILE: the signature wraps the attestation")
    if not attest:
        return None
    if isinstance(target, (str, os.PathLike)) and os.path.isdir(target):
        from ..run import find_run

        if find_run(target) is not None:
            raise InputError(target, "--attest: this is a training-run folder; attest the checkpoint folder a "
                                     "buyer receives (e.g. its checkpoint-N/)")
    return Attestation(attest, sign_key)
