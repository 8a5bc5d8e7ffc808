"""The buyer's side: is this delivery byte for byte the checkpoint that was audited, and was the audit edited?

``read`` opens an attestation (a DSSE envelope or a bare Statement), checks its signature against
``--key`` and its shape; ``compare`` re-hashes the delivery (a folder, a file, or a prefix in object
storage, streamed) and lists every file added, removed or changed; ``check_reports`` finds the
audit's report files beside the attestation and checks their digests, and that each prints this
statement's digest; ``recheck`` runs the check again with the attested settings and pack.
Anything malformed or wrongly signed is an ``InputError`` (exit 2).
"""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import dsse, statement

_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(rb"sha256:[0-9a-f]{64}")


@dataclass
class Attested:
    """An attestation as read: its statement, digest, and what is known of its signer."""

    statement: dict
    digest: str
    signed: bool = False
    signer: str | None = None      # "sha256:<keyid>" as the envelope names it
    checked: bool = False          # the signature verified with the --key given
    algorithm: str | None = None

    @property
    def predicate(self) -> dict:
        return self.statement["predicate"]


@dataclass
class Comparison:
    """The delivery against the subjects: names in each group, and the attested / current digests of the changed."""

    attested: int = 0
    matched: list = field(default_factory=list)
    changed: list = field(default_factory=list)   # (name, attested sha256, current sha256 or why none)
    added: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    where: dict = field(default_factory=dict)     # name -> "etag …, version …" of an object in a bucket

    @property
    def same(self) -> bool:
        return not (self.changed or self.added or self.removed)


def _load_json(path) -> dict:
    limit = _limits().json_max_bytes
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise InputError(path, f"cannot read the attestation: {e.strerror}") from None
    if len(raw) > limit:
        raise InputError(path, f"malformed attestation: over the rule pack's json_max_bytes ({limit})")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"malformed attestation: not JSON ({str(e)[:120]})") from None
    if not isinstance(doc, dict):
        raise InputError(path, "malformed attestation: not a JSON object (expected a DSSE envelope or an in-toto Statement)")
    return doc


def _limits():
    from ..loader.limits import default_limits

    return default_limits()


def read(path, key_file=None) -> Attested:
    """Read the attestation at ``path``; with ``key_file`` its signature must verify with that public key."""
    doc = _load_json(path)
    if "payloadType" in doc or "signatures" in doc or "payload" in doc:
        return _read_envelope(doc, path, key_file)
    if key_file:
        raise InputError(path, "is unsigned (a bare in-toto Statement, no DSSE envelope), but --key was given: "
                               "there is no signature to check the key against")
    st = _check_statement(doc, path)
    return Attested(st, statement.digest(st))


def _read_envelope(env: dict, path, key_file) -> Attested:
    if env.get("payloadType") != dsse.PAYLOAD_TYPE:
        raise InputError(path, f"malformed envelope: payloadType is {str(env.get('payloadType'))[:80]!r}, "
                               f"expected {dsse.PAYLOAD_TYPE!r}")
    body = dsse.b64(env.get("payload"), "payload", path)
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or not sigs or not all(isinstance(s, dict) for s in sigs):
        raise InputError(path, "malformed envelope: no signatures (a DSSE envelope needs at least one)")
    decoded = [(s.get("keyid") if isinstance(s.get("keyid"), str) else "", dsse.b64(s.get("sig"), "a signature", path))
               for s in sigs]
    out = Attested({}, "", signed=True, signer=f"sha256:{decoded[0][0]}" if decoded[0][0] else None)
    if key_file:
        key = dsse.load_public_key(key_file)
        want = dsse.keyid(key)
        ours = [sig for kid, sig in decoded if kid in (want, "")]
        if not ours:
            named = ", ".join(f"sha256:{kid}" for kid, _ in decoded)
            raise InputError(path, f"wrong key: the envelope is signed by {named}, not by the --key given (sha256:{want})")
        if not any(dsse.signature_ok(body, dsse.PAYLOAD_TYPE, sig, key) for sig in ours):
            raise InputError(path, f"the signature does not verify with the --key given (sha256:{want}): the statement "
                                   "was changed after it was signed, or another key signed it")
        out.signer, out.checked, out.algorithm = f"sha256:{want}", True, dsse.algorithm(key)
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"malformed envelope: the payload is not JSON ({str(e)[:120]})") from None
    out.statement = _check_statement(doc, path)
    out.digest = statement.digest(out.statement)
    return out


def _bad(path, what: str):
    return InputError(path, f"malformed attestation: {what}")


def _check_statement(st, path) -> dict:
    """The statement's shape, checked before anything is trusted from it."""
    if not isinstance(st, dict) or st.get("_type") != statement.STATEMENT_TYPE:
        raise _bad(path, f"_type is not {statement.STATEMENT_TYPE!r} (not an in-toto Statement v1)")
    if st.get("predicateType") != statement.PREDICATE_TYPE:
        raise _bad(path, f"predicateType {str(st.get('predicateType'))[:100]!r} is not initcheck's "
                         f"({statement.PREDICATE_TYPE}); a model-signing bundle is checked with model_signing verify")
    subjects = st.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise _bad(path, "no subjects")
    seen = set()
    for s in subjects:
        name = s.get("name") if isinstance(s, dict) else None
        digest = s.get("digest") if isinstance(s, dict) else None
        if not isinstance(name, str) or not _relative_ok(name):
            raise _bad(path, f"subject name {str(name)[:100]!r} is not a relative POSIX path inside the checkpoint")
        if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str) or not _HEX64.fullmatch(digest["sha256"]):
            raise _bad(path, f"subject {name[:100]!r} has no sha256 digest (64 lower-case hex digits)")
        if name in seen:
            raise _bad(path, f"subject {name[:100]!r} is named twice")
        seen.add(name)
    p = st.get("predicate")
    if not isinstance(p, dict):
        raise _bad(path, "no predicate")
    summary = p.get("summary")
    if p.get("verdict") not in ("pass", "fail") or not isinstance(p.get("fail_on"), str):
        raise _bad(path, "the predicate has no verdict (pass / fail) and fail_on")
    if not isinstance(summary, dict) or not all(isinstance(summary.get(k), int) for k in ("error", "warning", "info")):
        raise _bad(path, "the predicate has no error / warning / info counts")
    for key in ("findings", "reports"):
        if not isinstance(p.get(key, []), list) or not all(isinstance(x, dict) for x in p.get(key, [])):
            raise _bad(path, f"the predicate's {key} is not a list of objects")
    for key in ("tool", "pack", "target"):
        if not isinstance(p.get(key), dict):
            raise _bad(path, f"the predicate has no {key}")
    return st


def _relative_ok(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and "\\" not in name and "\x00" not in name and not name.startswith("/") \
        and all(part not in ("", ".", "..") for part in parts)


def _sha256(root: Path, name: str) -> str:
    """The file's digest, or why there is none (it leaves the folder, it cannot be read)."""
    from ..loader import _inside

    try:
        return statement.file_sha256(_inside(root, name))
    except InputError as e:
        return f"not read: {e.problem}"
    except OSError as e:
        return f"not read: {e.strerror}"


def compare(target, attested: Attested) -> Comparison:
    """Re-hash ``target`` (the delivered folder or file, or a URL) and compare it with the attested subjects.

    A folder is walked as the loader walks it for ``target.files`` (subfolders included, symlinked
    folders not followed, the pack's ``max_files``), so a file added anywhere in it is found. A URL
    (``s3://bucket/prefix/``) is listed as the check lists it, see ``compare_url``.
    """
    from ..loader import _all_files
    from ..loader.remote import is_url

    if is_url(target):
        return compare_url(target, attested)
    p = Path(target)
    if p.is_dir():
        root, limit = p, _limits().max_files
        names = _all_files(root, limit)
        if len(names) >= limit:
            raise InputError(target, f"holds {limit} or more files, the rule pack's max_files: the walk would be cut")
    elif p.is_file():
        root, names = p.parent, [p.name]
    else:
        raise InputError(target, "no such file or folder")
    expected = _expected(attested)
    present = [n for n in names if n in expected]
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:   # hashlib releases the GIL: files in parallel
        digests = dict(zip(present, pool.map(lambda n: _sha256(root, n), present)))
    return _compared(names, digests, expected)


def compare_url(url: str, attested: Attested) -> Comparison:
    """``compare`` for a delivery in object storage: the objects under ``url`` listed exactly as
    ``initcheck check URL`` lists them (nothing outside the prefix, folder markers skipped, a key with
    ``..`` refused), the attested ones hashed by a ranged stream (the default pack's ``remote_*`` keys;
    nothing is copied to disk), each named with its ETag and version. An object that cannot be read,
    or one cut while it is read, is an ``InputError``: the bucket, not the delivery, is in question."""
    from ..loader import remote

    limit = _limits().max_files
    fs, objects = remote.list_objects(url)
    if len(objects) > limit:
        raise InputError(url, f"holds {len(objects)} objects, over the rule pack's max_files ({limit}): the listing would be cut")
    expected = _expected(attested)
    digests = remote.sha256_objects(fs, [o for o in objects if o.rel in expected], remote.Options.from_scan({}))
    out = _compared([o.rel for o in objects], digests, expected)
    out.where = {o.rel: ", ".join(f"{k} {v}" for k, v in (("etag", o.etag), ("version", o.version)) if v)
                 for o in objects}
    return out


def _expected(attested: Attested) -> dict:
    return {s["name"]: s["digest"]["sha256"] for s in attested.statement["subject"]}


def _compared(names: list, digests: dict, expected: dict) -> Comparison:
    """The delivery's ``names`` (and the digests of the attested ones) against the subjects."""
    out = Comparison(attested=len(expected))
    for name in (n for n in names if n in expected):
        (out.matched.append(name) if digests[name] == expected[name]
         else out.changed.append((name, expected[name], digests[name])))
    out.added = [n for n in names if n not in expected]
    walked = set(names)
    out.removed = [n for n in expected if n not in walked]
    return out


def check_reports(attestation_path, attested: Attested) -> list:
    """The audit's report files, looked for beside the attestation: ``[(name, status, detail)]``, status
    one of "matches", "edited", "missing", "outside". A report that matches its listed digest must also
    print this statement's digest (HTML, Markdown, JSON); one that prints another was written for another
    statement: the statement was edited after the reports were written, an ``InputError``."""
    home = Path(os.path.dirname(os.path.abspath(attestation_path)))
    rows = []
    for r in attested.predicate.get("reports", []):
        name, want = r.get("name"), (r.get("digest") or {}).get("sha256") if isinstance(r.get("digest"), dict) else None
        if not isinstance(name, str) or not isinstance(want, str):
            raise _bad(attestation_path, "a report entry has no name or sha256 digest")
        if not _relative_ok(name):
            rows.append((name, "outside", "not beside the attestation: not checked"))
            continue
        full = home / name
        if not full.is_file():
            rows.append((name, "missing", "not found beside the attestation: not checked"))
            continue
        got = statement.file_sha256(full)
        if got != want:
            rows.append((name, "edited", f"sha256 {want[:12]}… attested, now {got[:12]}…: edited since the audit"))
            continue
        if r.get("format") in statement.CARRY_DIGEST:
            printed = _DIGEST.findall(full.read_bytes())
            if attested.digest.encode() not in printed:
                shown = printed[0].decode() if printed else "no attestation digest"
                raise InputError(attestation_path, f"the statement was edited after its reports were written: {name} prints "
                                                   f"{shown}, this statement's digest is {attested.digest}")
        rows.append((name, "matches", "matches"))
    return rows
