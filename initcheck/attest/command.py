"""``initcheck verify PATH --attestation FILE [--key PUB.pem] [--recheck]``.

Exit 0: the bytes match the attestation (and its signature verifies, when there is one and a key);
1: a file was added, removed or changed, a report was edited, or the recheck's verdict differs;
2: the attestation is malformed or wrongly signed, or the input cannot be read (one line).
"""

import sys

import click


def _short(digest: str) -> str:
    return digest if len(digest) < 24 else digest[:23] + "…"


def signature_line(att) -> str:
    if not att.signed:
        return "signature: none: an unsigned in-toto Statement; nothing proves who wrote it"
    if att.checked:
        return f"signature: valid, {att.algorithm} key {att.signer} (the --key given)"
    return (f"signature: signed by key {att.signer or '(no keyid)'}, NOT checked: pass the signer's public key "
            "with --key PUB.pem")


def audit_line(p: dict) -> str:
    s, tool, pack = p["summary"], p["tool"], p["pack"]
    return (f"audit: {p['verdict'].upper()} {s['error']} error(s), {s['warning']} warning(s), {s['info']} info "
            f"(fail-on: {p['fail_on']}); rule pack {pack.get('name')} {_short(str(pack.get('digest')))}; "
            f"initcheck {tool.get('version')}, torch {tool.get('torch')}; {p.get('created')}")


def file_lines(cmp) -> list:
    from ..report.terminal import printable

    out = [f"files: {cmp.attested} attested, {len(cmp.matched)} match"
           + (f", {len(cmp.changed)} changed, {len(cmp.added)} added, {len(cmp.removed)} removed" if not cmp.same else "")]

    def at(name):   # an object in a bucket: its ETag and version, to find it in the store's history
        return f" ({printable(cmp.where[name])})" if cmp.where.get(name) else ""

    for name, want, got in cmp.changed:
        now = f"now {got[:12]}…" if not got.startswith("not read") else got
        out.append(f"  changed  {printable(name)}{at(name)}: sha256 {want[:12]}… attested, {now}")
    out += [f"  added    {printable(n)}{at(n)}: not in the attestation" for n in cmp.added]
    out += [f"  removed  {printable(n)}: attested, not in the delivery" for n in cmp.removed]
    return out


@click.command("verify")
@click.argument("path", type=click.Path())
@click.option("--attestation", "attestation", required=True, type=click.Path(dir_okay=False),
              help="The attestation initcheck check --attest wrote (a DSSE envelope or an unsigned Statement).")
@click.option("--key", type=click.Path(dir_okay=False), default=None,
              help="The signer's public key (PEM); the envelope's signature must verify with it.")
@click.option("--recheck", is_flag=True, default=False,
              help="Also run the check again with the attested settings and rule pack, and compare the verdicts.")
@click.option("--rules", default=None, help="With --recheck: the audit's rule pack file, when it was not a built-in one.")
@click.option("--revision", default=None, help="Branch, tag or commit of a Hub id in the local cache.")
@click.option("--debug", is_flag=True, default=False, help="Show tracebacks.")
def verify(path, attestation, key, recheck, rules, revision, debug):
    """Check that the checkpoint at PATH is byte for byte the one an attestation audited.

    PATH is a folder, a file, or a URL (s3://bucket/prefix/, any fsspec URL: each object is
    streamed and hashed, never copied to disk). Checks the signature (with --key), re-hashes every
    file of PATH, lists each file added, removed or changed since the audit, checks the audit's
    report files found beside the attestation, and prints the attested verdict and counts.
    Exit 0: the bytes match; 1: something differs; 2: a malformed or wrongly signed attestation.
    """
    from ..cli import _fail
    from ..errors import InputError
    from ..report.terminal import printable
    from . import verify as V

    try:
        from .. import hubcache
        from ..loader.remote import is_url

        if is_url(path) and revision:
            raise InputError(path, "--revision applies to a Hub id or a models--org--name cache folder, not to a URL")
        target = path if is_url(path) else hubcache.resolve(path, revision)   # a URL: listed and streamed by fsspec
        att = V.read(attestation, key)
        lines = [f"initcheck verify: {printable(path)} against {printable(attestation)}", signature_line(att),
                 f"attestation digest: {att.digest} (the audit's HTML and Markdown reports print it)"]
        cmp = V.compare(target, att)
        lines += file_lines(cmp)
        reports = V.check_reports(attestation, att)
        if reports:
            lines.append("reports: " + "; ".join(f"{printable(n)} {detail}" for n, _, detail in reports))
        lines.append(audit_line(att.predicate))
        same = True
        if recheck:
            from .recheck import recheck as run_recheck

            more, same = run_recheck(target, att.predicate, rules)
            lines += more
    except Exception as e:  # noqa: BLE001 - every failure becomes one line and exit 2
        _fail(e, debug)
    edited = [n for n, status, _ in reports if status == "edited"]
    differs = not cmp.same or edited or not same
    if differs:
        what = [f"{len(x)} {w}" for x, w in ((cmp.changed, "changed"), (cmp.added, "added"), (cmp.removed, "removed"),
                                             (edited, "report(s) edited")) if x] + ([] if same else ["the recheck's verdict"])
        lines.append(f"DIFFERS: {', '.join(what)} since the audit")
    elif att.checked:
        lines.append("verified: the bytes are the audited bytes, and the attestation is signed by the key given")
    elif att.signed:
        lines.append("bytes match the attestation; its signature was not checked (no --key)")
    else:
        lines.append("bytes match the attestation; it is unsigned, so nothing proves who wrote it")
    click.echo("\n".join(lines))
    sys.exit(1 if differs else 0)

