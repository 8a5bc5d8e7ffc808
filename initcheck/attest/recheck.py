"""``initcheck verify --recheck``: run the check again with the attested settings and pack, compare verdicts.

The pack must be the one the audit used: a built-in pack by name, or the file given with
``--rules``, and its digest (``statement.pack_digest``) must equal the attested one, or the two runs
would judge by different thresholds. Remote code is never run again, and a baseline file is not
re-applied: both are said.
"""

from ..errors import InputError
from . import statement


def settings_for(predicate: dict, rules=None, target=None):
    """``Settings`` rebuilt from the predicate (``rules``: the pack file, when the audit's was a file)."""
    from ..config import settings_from
    from ..packs import builtin_packs

    pack, st, pr = predicate["pack"], predicate.get("settings") or {}, (predicate.get("probe") or {}).get("settings") or {}
    spec = rules or (pack.get("name") if pack.get("name") in builtin_packs() else None)
    if spec is None:
        raise InputError(None, f"--recheck: the audit used rule pack {str(pack.get('name'))[:80]!r} from a file; "
                               "give that file with --rules FILE")
    base = st.get("base")
    if base is not None:
        import os

        from ..loader.remote import is_url

        if not is_url(base) and not os.path.exists(base):   # a URL base is read again by the check itself
            raise InputError(base, "--recheck: the audit compared against this --base, which is not here")
    try:
        return settings_from(
            rules=spec, select=list(pack.get("select") or []), ignore=list(pack.get("ignore") or []),
            fail_on=predicate["fail_on"], suppress=list(st.get("suppress") or []), task=st.get("task"),
            num_labels=st.get("num_labels"), heads=list(st.get("heads") or []), base=base,
            probe=pr.get("probe"), probe_steps=pr.get("steps", 20), lr=pr.get("lr", 5e-5),
            batch_size=pr.get("batch_size", 8), seq_len=pr.get("seq_len", 32), seed=pr.get("seed", 0),
            device=pr.get("device", "cpu"), train=pr.get("train", "all"), data=pr.get("data"))
    except (TypeError, ValueError) as e:
        raise InputError(None, f"--recheck: the attested settings cannot be used ({e})") from None


def recheck(target, predicate: dict, rules=None) -> tuple:
    """Run the check again; returns ``(lines, same_verdict)``."""
    from ..api import run
    from ..packs import pack_for

    settings = settings_for(predicate, rules, target)
    digest = statement.pack_digest(pack_for(settings))
    if digest != predicate["pack"].get("digest"):
        raise InputError(settings.rules, f"--recheck: this rule pack's digest is {digest}, the audit's was "
                                         f"{predicate['pack'].get('digest')}: its thresholds differ (another initcheck "
                                         "version, or project config on top); give the audit's pack with --rules FILE")
    report = run(target, settings)
    d = report.to_dict()
    s, a = d["summary"], predicate["summary"]
    lines = [(f"recheck: {d['verdict'].upper()} {s['error']} error(s), {s['warning']} warning(s), {s['info']} info "
              f"(initcheck {d['tool']['version']}, rule pack {predicate['pack'].get('name')} {digest[:19]}…)")]
    same = d["verdict"] == predicate["verdict"]
    lines.append("recheck: same verdict as the audit" if same else
                 f"recheck: verdict DIFFERS: the audit said {predicate['verdict'].upper()}, now {d['verdict'].upper()}")
    then = {(f.get("rule"), f.get("param")) for f in predicate.get("findings", []) if f.get("status") == "active"}
    now = {(f["rule"], f["param"]) for f in d["findings"] if not f["suppressed"] and not f["baselined"]}
    for rule, param in sorted(now - then, key=str):
        lines.append(f"  only now:        {rule} {param or '(model)'}")
    for rule, param in sorted(then - now, key=str):
        lines.append(f"  only in audit:   {rule} {param or '(model)'}")
    if any(s[k] != a.get(k) for k in ("error", "warning", "info")) and same:
        lines.append("recheck: the counts differ, the verdict does not")
    st = predicate.get("settings") or {}
    if st.get("trust_remote_code"):
        lines.append("recheck: the audit ran the checkpoint's own code (--trust-remote-code); the recheck did not")
    if st.get("baseline"):
        lines.append("recheck: the audit's baseline file was not re-applied; baselined findings count here")
    return lines, same
