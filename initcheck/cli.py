"""Command line: parse, call, exit. Exit codes: 0 pass, 1 findings at or above --fail-on, 2 bad input."""

import os
import shlex
import sys

import click

from .config import TASKS, Settings
from .errors import InputError
from .report import FORMATS


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
    initcheck demo                  build a tiny broken model, check it, write a report
    initcheck rules                 list the rules
    initcheck rule IC102            show a rule's documentation
    initcheck config                show the effective settings
    """


def _fail(e: Exception, debug: bool):
    if debug:
        raise e
    if isinstance(e, InputError):
        click.echo(f"initcheck: error: {e}", err=True)
    else:
        click.echo(f"initcheck: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (--debug shows the traceback)", err=True)
    sys.exit(2)


def check_options(f):
    opts = [
        click.option("--format", "formats", multiple=True, type=click.Choice(list(FORMATS)),
                     help="Output format; repeat with -o to write several reports in one run."),
        click.option("-o", "--output", "outputs", multiple=True, type=click.Path(dir_okay=False),
                     help="Output file for the --format in the same position (default: stdout)."),
        click.option("--fail-on", type=click.Choice(["error", "warning", "info", "never"]), default=None,
                     help="Lowest severity that fails the run (exit 1). Default: error."),
        click.option("--select", multiple=True, help="Rules to run: id, id prefix, name or ALL (repeatable, comma-separated)."),
        click.option("--ignore", multiple=True, help="Rules to skip: id, id prefix or name (repeatable, comma-separated)."),
        click.option("--rules", "rules", default=None, help="Rule pack: default, strict, ci, audit, or a TOML file."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="Project config (pyproject.toml or initcheck.toml); default: the nearest one."),
        click.option("--task", type=click.Choice(TASKS), default=None, help="Build this task model on top of the checkpoint."),
        click.option("--num-labels", type=int, default=None, help="Labels of the task head (with --task)."),
        click.option("--base", type=click.Path(exists=False), default=None, help="The pretrained checkpoint this one started from."),
        click.option("--head", "heads", multiple=True, help="Glob of parameter names that are new (repeatable)."),
        click.option("--trust-remote-code", is_flag=True, default=False, help="Allow custom model code from the folder."),
        click.option("--probe/--no-probe", "probe", default=None, help="Run (or skip) the short probe training run."),
        click.option("--probe-steps", type=int, default=None, help="Probe training steps (default 20)."),
        click.option("--lr", type=float, default=None, help="Probe learning rate (default 5e-5, AdamW)."),
        click.option("--batch-size", type=int, default=None),
        click.option("--seq-len", type=int, default=None),
        click.option("--seed", type=int, default=None),
        click.option("--device", default=None, help="Probe device: cpu (default) or cuda."),
        click.option("--train", type=click.Choice(["all", "heads"]), default=None, help="Probe a full fine-tune or heads only."),
        click.option("--data", type=click.Path(dir_okay=False), default=None, help="JSONL with text/label records for the probe."),
        click.option("--baseline", type=click.Path(dir_okay=False), default=None, help="Fail only on findings not in this baseline."),
        click.option("--write-baseline", type=click.Path(dir_okay=False), default=None, help="Record the current findings as a baseline."),
        click.option("--debug", is_flag=True, default=False, help="Show tracebacks."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_settings(config_file=None, **cli) -> Settings:
    """Project config first, then CLI flags on top (flags given as None keep the config's value)."""
    from .project import load_project_settings

    settings = load_project_settings(config_file)
    for key, value in cli.items():
        if key in ("select", "ignore", "heads"):
            value = _split(value) if key != "heads" else list(value)
            if value:
                setattr(settings, key, value)
        elif value is not None:
            setattr(settings, key, value)
    return settings.validate()


@main.command()
@click.argument("path", type=click.Path())
@check_options
def check(path, formats, outputs, write_baseline, debug, **cli):
    """Check the checkpoint at PATH (a model folder or a .safetensors/.bin/.pt file)."""
    try:
        if len(outputs) > max(len(formats), 1):
            raise InputError(None, "more -o/--output files than --format options")
        settings = build_settings(**cli)
        settings.command = "initcheck " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        formats = list(formats) or ["text"]
        settings.hashes = settings.hashes or "html" in formats or "sarif" in formats
        settings.progress = sys.stderr.isatty() and not debug
        from .api import run

        report = run(path, settings)
        data = report.to_dict()
        from .report import render

        for i, fmt in enumerate(formats):
            out = outputs[i] if i < len(outputs) else None
            color = fmt == "text" and out is None and sys.stdout.isatty()
            text = render(fmt, data, color=color, width=_width())
            if out:
                with open(out, "w", encoding="utf-8") as fh:
                    fh.write(text)
            else:
                click.echo(text, nl=False)
        if write_baseline:
            from .policy import write_baseline as wb

            wb(report, write_baseline)
            click.echo(f"initcheck: baseline of {len(report.findings)} finding(s) written to {write_baseline}", err=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line and exit 2
        _fail(e, debug)
    # recording a baseline accepts the current findings: that run succeeds
    sys.exit(0 if write_baseline else report.exit_code)


def _width() -> int:
    try:
        return max(80, os.get_terminal_size().columns)
    except OSError:
        return 100


@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="initcheck-demo.html",
              help="Where to write the demo's report (HTML, or JSON if the name ends in .json).")
@click.option("--keep", type=click.Path(file_okay=False), default=None, help="Keep the demo checkpoint in this folder.")
def demo(output, keep):
    """Build a tiny real RoBERTa classifier with a zero-initialised two-layer head, check it, write the report.

    Exits 0 when initcheck caught the planted defects, 1 if it missed them.
    """
    from .demo import run_demo

    sys.exit(run_demo(output, keep))


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
    r = lookup(rule_id)
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
