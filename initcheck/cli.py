"""Command line: parse, call, exit. Exit codes: 0 pass, 1 findings at or above --fail-on, 2 bad input."""

import os
import shlex
import sys

import click

from .config import TASKS, Settings
from .errors import InputError
from .report import FORMATS

# -o FILE takes its format from the extension; a --format right before an -o names that file's format
EXTENSIONS = {".json": "json", ".html": "html", ".htm": "html", ".sarif": "sarif", ".xml": "junit", ".md": "markdown",
              ".txt": "text"}
OUTPUTS_HELP = """\b
Outputs:
  --format F            stdout gets format F (default: text)
  -o FILE               FILE gets the format its extension names:
                        .json .html .sarif .xml (JUnit) .md (Markdown) .txt
  --format F -o FILE    an explicit pair: FILE gets format F (F must agree
                        with a known extension; any extension otherwise)
Repeat -o (and pairs) to write several reports in one run. A --format that no
-o follows names stdout's format; at most one may. Whatever goes to files,
a one-line verdict goes to the terminal (stderr when stdout carries a report),
unless -q."""


def _split(values) -> list:
    """Accept both repeated flags and comma-separated lists."""
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


class _DefaultGroup(click.Group):
    """``initcheck PATH`` means ``initcheck check PATH``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["check"] + list(args)
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="initcheck")
def main():
    """initcheck: check a fine-tune's starting point before you spend GPU hours on it.

    \b
    initcheck MODEL_DIR             check a checkpoint (same as: initcheck check MODEL_DIR)
    initcheck RUN_DIR               post-mortem of a training run (checkpoint-*/, trainer_state.json)
    initcheck demo                  build a tiny broken model, check it, write a report
    initcheck fix SRC -o DST        write a corrected starting checkpoint, proven by a re-check and a probe
    initcheck fleet SOURCES -o OUT  many checkpoints, one summary (a process pool, or --ray)
    initcheck verify DIR --attestation FILE   is DIR the audited checkpoint? (check --attest FILE)
    initcheck rules                 list the rules
    initcheck rule IC102            show a rule's documentation
    initcheck config                show the effective settings

    \b
    Outputs: -o FILE writes the format its extension names (.json .html .sarif
    .xml .md .txt); --format F names stdout's format, or the format of the
    -o FILE right after it. A one-line verdict always reaches the terminal
    (-q: none). Details: initcheck check --help.
    """
    # before torch loads libgomp: idle OpenMP threads sleep instead of spinning, which on a shared
    # machine made the probe 5-25x slower with one core busy (benchmarks/bench_probe.py --load)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _fail(e: Exception, debug: bool):
    if debug:
        raise e
    from .report.terminal import printable

    if isinstance(e, InputError):
        click.echo(f"initcheck: error: {e.line()}", err=True)
    else:
        first = str(e).splitlines()[0] if str(e) else ""
        click.echo(f"initcheck: error: {type(e).__name__}: {printable(first)} (--debug shows the traceback)", err=True)
    sys.exit(2)


def check_options(f):
    opts = [
        click.option("--format", "formats", multiple=True, type=click.Choice(list(FORMATS)),
                     help="stdout's format, or the format of the -o right after it (see Outputs below)."),
        click.option("-o", "--output", "outputs", multiple=True, type=click.Path(),   # checked by check_output_paths
                     help="Write a report to FILE, in the format its extension names (repeatable)."),
        click.option("-q", "--quiet", is_flag=True, default=False, help="No verdict line on the terminal."),
        click.option("-v", "--verbose", is_flag=True, default=False,
                     help="Progress as plain lines on stderr when it is not a terminal (CI logs)."),
        click.option("--revision", default=None, help="Branch, tag or commit of a Hub id in the local cache."),
        click.option("--fail-on", type=click.Choice(["error", "warning", "info", "never"]), default=None,
                     help="Lowest severity that fails the run (exit 1). Default: error."),
        click.option("--select", multiple=True, help="Rules to run: id, id prefix, name or ALL (repeatable, comma-separated)."),
        click.option("--ignore", multiple=True, help="Rules to skip: id, id prefix or name (repeatable, comma-separated)."),
        click.option("--rules", "rules", default=None, help="Rule pack: default, strict, ci, audit, or a TOML file."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="Project config (pyproject.toml or initcheck.toml); default: the nearest one."),
        click.option("--task", type=click.Choice(TASKS), default=None, help="Build this task model on top of the checkpoint."),
        click.option("--num-labels", type=int, default=None, help="Labels of the task head (with --task)."),
        click.option("--base", type=click.Path(exists=False), default=None, help="The pretrained checkpoint this one (or this training run) started from."),
        click.option("--head", "heads", multiple=True, help="Glob of parameter names that are new (repeatable)."),
        click.option("--trust-remote-code", is_flag=True, default=False,
                     help="RUN the checkpoint's own Python code (auto_map, *.py) to build its model, tokenizer and "
                          "processor, with your permissions. Only for code you have read; never set by a config file."),
        click.option("--probe/--no-probe", "probe", default=None, help="Run (or skip) the short probe training run."),
        click.option("--probe-steps", type=int, default=None, help="Probe training steps (default 20, at least 1)."),
        click.option("--lr", type=float, default=None, help="Probe learning rate (default 5e-5, AdamW; above 0)."),
        click.option("--batch-size", type=int, default=None, help="Probe batch size (default 8, at least 1)."),
        click.option("--seq-len", type=int, default=None, help="Probe sequence length (default 32, at least 1)."),
        click.option("--seed", type=int, default=None),
        click.option("--device", default=None, help="Probe device: cpu (default) or cuda."),
        click.option("--train", type=click.Choice(["all", "heads"]), default=None, help="Probe a full fine-tune or heads only."),
        click.option("--data", type=click.Path(dir_okay=False), default=None, help="JSONL with text/label records for the probe."),
        click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="Fail only on findings not in this baseline."),
        click.option("--write-baseline", type=click.Path(), default=None, help="Record the current findings as a baseline."),
        click.option("--debug", is_flag=True, default=False, help="Show tracebacks."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_settings(config_file=None, target=None, **cli) -> Settings:
    """Project config first, then CLI flags on top (flags given as None keep the config's value).
    ``target``: the path being checked; a project config found inside it (or inside ``--base``)
    is not applied, and a note on stderr says so."""
    from .project import load_project_settings

    settings = load_project_settings(config_file, checked=(target, cli.get("base")))
    if settings.config_ignored:
        from .report.terminal import printable

        click.echo(f"initcheck: note: {printable(settings.config_ignored)}", err=True)
    for key, value in cli.items():
        if key in ("select", "ignore", "heads"):
            value = _split(value) if key != "heads" else list(value)
            if value:
                setattr(settings, key, value)
        elif value is not None:
            setattr(settings, key, value)
    return _check_probe_settings(settings.validate())


def _check_probe_settings(s: Settings) -> Settings:
    """Probe settings no run could use are usage errors, not findings: the user mistyped them."""
    import math

    for name, value, ok in (("--probe-steps", s.probe_steps, s.probe_steps >= 1),
                            ("--batch-size", s.batch_size, s.batch_size >= 1),
                            ("--seq-len", s.seq_len, s.seq_len >= 1),
                            ("--lr", s.lr, math.isfinite(s.lr) and s.lr > 0)):
        if not ok:
            raise InputError(None, f"{name} {value} is impossible: it must be {'above 0' if name == '--lr' else 'at least 1'}")
    if s.probe is not False and str(s.device).startswith("cuda"):
        import torch  # only when a GPU is asked for: the static path stays torch-free

        if not torch.cuda.is_available():
            raise InputError(None, f"--device {s.device}: this torch ({torch.__version__}) sees no CUDA device; "
                                   "use --device cpu, or --no-probe")
    elif str(s.device) not in ("cpu",) and not str(s.device).startswith(("cuda", "mps", "xpu")):
        raise InputError(None, f"--device {s.device!r} is not a device torch knows (cpu, cuda, cuda:N)")
    return s


class _CheckCommand(click.Command):
    """Records the order of --format and -o on the command line: click keeps each option's values
    in order, but not how two options interleave, and that order is what pairs them."""

    def make_parser(self, ctx):
        parser = super().make_parser(ctx)
        parse = parser.parse_args

        def recording(args):
            opts, largs, order = parse(args=args)
            ctx.meta["initcheck.output_order"] = [p.name for p in order if p.name in ("formats", "outputs")]
            return opts, largs, order

        parser.parse_args = recording
        return parser


def plan_outputs(order, formats, outputs):
    """Pair formats with files. Returns ``(stdout_format or None, [(format, file), ...])``.

    ``order``: "formats"/"outputs" in command-line order. A --format directly followed by an -o is
    that file's format; every other -o takes the format of its extension; a --format that no -o
    follows is stdout's. Anything that does not add up is an InputError (exit 2).
    """
    fmts, outs = list(formats), list(outputs)
    stdout, files, pending = [], [], None
    for name in order:
        if name == "formats":
            if pending is not None:
                stdout.append(pending)
            pending = fmts.pop(0)
        else:
            out = outs.pop(0)
            known = EXTENSIONS.get(os.path.splitext(out)[1].lower())
            if pending is not None:
                if known and known != pending:
                    raise InputError(None, f"--format {pending} -o {out}: {out}'s extension means {known}; "
                                           f"name the file .{_ext(pending)} or drop --format")
                files.append((pending, out))
                pending = None
            elif known:
                files.append((known, out))
            else:
                raise InputError(None, f"-o {out}: no format for this extension (use {' '.join(sorted(set(EXTENSIONS) - {'.htm'}))}, "
                                       "or put --format F right before -o)")
    if pending is not None:
        stdout.append(pending)
    if len(stdout) > 1:
        raise InputError(None, f"--format {' and --format '.join(stdout)} all name stdout: pair the extra ones with -o FILE "
                               "(see initcheck check --help)")
    return (stdout[0] if stdout else None), files


def check_output_paths(paths, checked=()) -> None:
    """Refuse, before any work, an output file the run could not write at the end.

    ``paths``: every file the run will write (-o, --write-baseline). Each must not be a folder,
    its parent folder must exist and be writable, no file may be named twice, and none may lie
    inside a checked folder (``checked``: the target and --base): initcheck never writes into
    the folder it was given (README, "Untrusted checkpoints").
    """
    seen = set()
    for out in paths:
        path = os.path.abspath(out)
        parent = os.path.dirname(path)
        if os.path.isdir(path):
            problem = "is a folder; name a file"
        elif not os.path.isdir(parent):
            problem = f"cannot be written: folder {os.path.dirname(out) or parent} does not exist"
        elif not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            problem = "cannot be written: permission denied"
        elif os.path.realpath(path) in seen:
            problem = "is named twice as an output"
        else:
            problem = next((f"is inside the checked folder {c}: initcheck never writes into the folder it checks; "
                            "write the report elsewhere" for c in checked
                            if c is not None and os.path.isdir(c) and _inside(path, c)), None)
        if problem:
            raise InputError(out, problem)
        seen.add(os.path.realpath(path))


def _inside(path: str, folder) -> bool:
    folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), folder]) == folder


def _ext(fmt: str) -> str:
    return {"junit": "xml", "markdown": "md", "text": "txt"}.get(fmt, fmt)


@main.command(cls=_CheckCommand, epilog=OUTPUTS_HELP)
@click.argument("path", type=click.Path())
@check_options
@click.option("--attest", type=click.Path(), default=None,
              help="Write an in-toto attestation of this audit to FILE: every file's SHA-256, the verdict, the findings.")
@click.option("--sign-key", type=click.Path(dir_okay=False), default=None,
              help="Sign the attestation (DSSE) with this PEM private key, ECDSA P-256 or Ed25519 "
                   "(password, if encrypted: INITCHECK_SIGN_KEY_PASSWORD).")
@click.pass_context
def check(ctx, path, formats, outputs, quiet, verbose, revision, write_baseline, debug, attest, sign_key, **cli):
    """Check the checkpoint at PATH: a model folder, a .safetensors/.bin/.pt file, a Hub id
    (org/name) already in the local Hugging Face cache, a models--org--name cache folder, or an
    object-storage URL (s3://bucket/prefix/, gs://..., any fsspec URL; credentials from the environment).

    A training output folder (checkpoint-*/ subfolders, trainer_state.json) gets a post-mortem:
    its training log is judged, how far each tensor moved is measured (from --base, else the
    earliest checkpoint), and its latest checkpoint gets the static checks."""
    progress = None
    from .loader.safetensors_file import guard_sigbus

    guard_sigbus()  # a checkpoint truncated under its mmap: one line and exit 2, not a silent SIGBUS death
    try:
        order = ctx.meta.get("initcheck.output_order") or ["formats"] * len(formats) + ["outputs"] * len(outputs)
        stdout_fmt, files = plan_outputs(order, formats, outputs)
        if stdout_fmt is None and not files:
            stdout_fmt = "text"
        settings = build_settings(target=path, **cli)
        from . import hubcache

        from .loader.remote import is_url

        if is_url(path) and revision:
            raise InputError(path, "--revision applies to a Hub id or a models--org--name cache folder, not to a URL")
        target = path if is_url(path) else hubcache.resolve(path, revision)   # a URL is read by fsspec
        check_output_paths([out for _, out in files] + ([write_baseline] if write_baseline else []) + ([attest] if attest else []),
                           checked=(target, settings.base))
        from .attest.write import start as start_attestation

        attestation = start_attestation(attest, sign_key, target)   # the key is read before the scan
        settings.hash_all = settings.hash_all or attestation is not None   # its subjects: every file's digest
        settings.command = "initcheck " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if settings.trust_remote_code:   # the one way initcheck runs a checkpoint's code: never silently
            from .report.terminal import printable

            click.echo(f"initcheck: warning: --trust-remote-code: transformers will import and run the Python code in "
                       f"{printable(path)} (auto_map, *.py) with your permissions", err=True)
        used = {stdout_fmt} | {f for f, _ in files}
        # audit formats carry every file's SHA-256; a JSON-only run skips it (on a multi-GB
        # checkpoint hashing costs more than the whole static scan)
        settings.hashes = settings.hashes or bool(used & {"html", "sarif"}) or attestation is not None
        progress = _progress_for(verbose, debug, quiet)
        settings.progress = progress if progress is not None else False
        from .api import run

        report = run(target, settings)
        if progress is not None:
            progress.phase("rendering")
        data = report.to_dict()
        if attestation is not None:   # its digest and signer go into the reports: a printed one names its attestation
            data["attestation"] = attestation.bind(report, data)
        from .report import render

        written = []
        for fmt, out in files:
            text = render(fmt, data, width=_width())
            try:
                with open(out, "w", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError as e:   # checked before the run; the disk may still fill or the folder go
                raise InputError(out, f"cannot be written: {e.strerror}") from None
            written.append(f"{fmt} report in {out}")
        if attestation is not None:
            written.append(attestation.write(files))
        if progress is not None:
            progress.close()
            progress = None
        if stdout_fmt:
            color = stdout_fmt == "text" and sys.stdout.isatty()
            click.echo(render(stdout_fmt, data, color=color, width=_width()), nl=False)
        # the verdict always reaches the terminal: on stderr when stdout carries a report
        if not quiet and (files or attestation is not None or stdout_fmt != "text"):
            click.echo(verdict_line(data) + (f"; {', '.join(written)}" if written else ""), err=stdout_fmt is not None)
        if write_baseline:
            from .policy import write_baseline as wb

            wb(report, write_baseline)
            click.echo(f"initcheck: baseline of {len(report.findings)} finding(s) written to {write_baseline}", err=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line and exit 2
        if progress is not None:
            progress.close()
        _fail(e, debug)
    # recording a baseline accepts the current findings: that run succeeds
    sys.exit(0 if write_baseline else report.exit_code)


def verdict_line(data: dict) -> str:
    s = data["summary"]
    return (f"initcheck: {data['verdict'].upper()} {s['error']} error(s), {s['warning']} warning(s), {s['info']} info "
            f"(fail-on: {data['fail_on']})")


def _progress_for(verbose: bool, debug: bool, quiet: bool = False):
    """Rich progress on a terminal; elsewhere plain lines: every phase and step with -v, a line per
    10 s of a long phase without it (a long probe piped into a log is not silence), none with -q."""
    from .report.progress import PlainProgress, RichProgress

    if sys.stderr.isatty() and not debug:
        return RichProgress()
    if verbose or not quiet:
        return PlainProgress(verbose=verbose)
    return None


def _width() -> int:
    try:
        return max(80, os.get_terminal_size().columns)
    except OSError:
        return 100


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="initcheck-demo.html",
              help="Where to write the demo's report (HTML, or JSON if the name ends in .json).")
@click.option("--keep", type=click.Path(file_okay=False), default=None, help="Keep the demo checkpoint in this folder.")
@click.option("--layout", type=click.Choice(["task", "split"]), default="task", show_default=True,
              help="task: a RobertaForSequenceClassification saved with save_pretrained; split: a RobertaModel "
                   "saved with save_pretrained and the head beside it in score_head.pt, as vendors ship it.")
def demo(output, keep, layout):
    """Build a tiny real RoBERTa classifier with a zero-initialised two-layer head, check it, write the report.

    Exits 0 when initcheck caught the planted defects, 1 if it missed them.
    """
    from .demo import run_demo

    try:
        check_output_paths([output])
    except InputError as e:
        _fail(e, False)
    sys.exit(run_demo(output, keep, layout))


@main.command("rules")
def list_rules():
    """List every rule with its id, name, default severity and summary."""
    from .rules import load_all

    for r in sorted(load_all().values(), key=lambda r: r.id):
        click.echo(f"{r.id}  {r.name:<28} {r.severity:<8} {r.summary}")


@main.command("rule")
@click.argument("rule_id")
def show_rule(rule_id):
    """Show the documentation of a rule (by id or name)."""
    from .packs import load_pack
    from .rules import load_all, lookup

    load_all()
    # ids are case-insensitive (ic102), names are lower-case (All-Zero-Weights)
    r = lookup(rule_id) or lookup(rule_id.upper()) or lookup(rule_id.lower())
    if r is None:
        click.echo(f"initcheck: error: no rule {rule_id!r} (see: initcheck rules)", err=True)
        sys.exit(2)
    opts = load_pack().rules.get(r.id, {})
    click.echo(f"# {r.id} {r.name} ({r.severity})\n")
    click.echo(r.doc)
    if opts:
        click.echo("\n## Defaults (rules/default.toml)")
        for k, v in opts.items():
            click.echo(f"- {k} = {v!r}")


@main.command("config")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None)
@click.option("--rules", "rules", default=None)
def show_config(config_file, rules):
    """Print the effective settings and rule pack (after project config and flags)."""
    from .project import describe

    try:
        click.echo(describe(build_settings(config_file=config_file, rules=rules)))
    except InputError as e:
        _fail(e, False)


if __name__ == "__main__":
    main()
from .attest.command import verify as _verify; main.add_command(_verify)  # noqa: E402
from .fleet.command import fleet as _fleet; main.add_command(_fleet)  # noqa: E402
from .fix.command import fix as _fix; main.add_command(_fix)  # noqa: E402
