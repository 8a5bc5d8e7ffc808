"""``initcheck fix SRC -o DST``: the click command (registered at the end of ``initcheck.cli``)."""

import sys

import click

from ..config import TASKS


@click.command("fix")
@click.argument("src", type=click.Path())
@click.option("-o", "--output", "dst", type=click.Path(), default=None, help="The folder to write the corrected checkpoint to.")
@click.option("--only", multiple=True, help="Apply only the remedies these rules ask for (IC102,IC105,...; repeatable).")
@click.option("--dry-run", is_flag=True, default=False, help="Print the plan (tensor, rule, remedy) and write nothing.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds every re-initialisation and the probe.")
@click.option("--revision", default=None, help="The cached revision of a Hub id SRC (default: main).")
@click.option("--force", is_flag=True, default=False, help="Replace DST if it exists.")
@click.option("--rules", "rules", default=None, help="Rule pack: default, strict, ci, audit, or a TOML file.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="Project config.")
@click.option("--task", type=click.Choice(TASKS), default=None, help="The task model a training script builds.")
@click.option("--num-labels", type=int, default=None, help="Labels of the task head (with --task).")
@click.option("--head", "heads", multiple=True, help="Glob of parameter names that are new (repeatable).")
@click.option("--base", type=click.Path(exists=False), default=None, help="The pretrained checkpoint SRC starts from.")
@click.option("--data", type=click.Path(dir_okay=False), default=None, help="JSONL with text/label records (checks and probe).")
@click.option("--train", type=click.Choice(["all", "heads"]), default=None, help="Probe a full fine-tune or heads only.")
@click.option("--lr", type=float, default=None, help="Probe learning rate (default 5e-5).")
@click.option("--probe/--no-probe", "probe", default=None, help="Run (or skip) the probe in the proof on DST.")
@click.option("--probe-steps", type=int, default=None, help="Probe training steps (default 20).")
@click.option("--batch-size", type=int, default=None, help="Probe batch size (default 8).")
@click.option("--seq-len", type=int, default=None, help="Probe sequence length (default 32).")
@click.option("--device", default=None, help="Probe device: cpu (default) or cuda.")
@click.option("-q", "--quiet", is_flag=True, default=False, help="Only the verdict line.")
@click.option("--debug", is_flag=True, default=False, help="Show tracebacks.")
def fix(src, dst, only, dry_run, seed, force, revision, quiet, debug, config_file, **cli):
    """Write a corrected starting checkpoint of SRC to DST, proven by a re-check and a probe.

    \b
    Heads that are zero, constant, badly scaled, symmetric or non-finite get the model's own
    init; a backbone under the wrong key prefix is renamed; dead norm gains are reset. Pretrained
    weights that are off are never touched: they are listed as not fixable here (exit 1).
    Exit 0: DST checks clean and its probe starts in the ln C band and falls (or nothing to fix).
    """
    from ..cli import _fail, _split, build_settings
    from ..errors import InputError

    try:
        settings = build_settings(config_file=config_file, target=src, **cli)
        from .run import fix as run_fix
        from .run import plan_lines

        result = run_fix(src, dst, settings, only=_split(only), dry_run=dry_run, seed=seed, force=force, revision=revision)
    except InputError as e:
        _fail(e, debug)
    except Exception as e:  # noqa: BLE001 - one line and exit 2, as the check does
        _fail(e, debug)
    log = result.log
    if not quiet:
        n = sum(len(s["names"]) for s in log["steps"])
        click.echo(f"initcheck fix: {src} (before: {log['before']['verdict'].upper()}, {log['before']['errors']} error(s), "
                   f"{log['before']['warnings']} warning(s))")
        click.echo(f"plan: {len(log['steps'])} step(s), {n} tensor(s)" + (" (dry run: nothing written)" if dry_run else ""))
        for line in plan_lines(log):
            click.echo(line)
        if not dry_run:
            files = log["files"]
            if not log["steps"]:
                click.echo(f"nothing to fix: {dst} is a byte-identical copy of {src} ({len(files['copied'])} file(s))")
            else:
                written = ", ".join(f"{new}" + (f" (from {old})" if old != new else "") for new, old in files["written"].items())
                click.echo(f"wrote {dst}: {written}; {len(files['copied'])} file(s) copied byte-identical")
            for f, state in (files.get("training_state_dropped") or {}).items():
                click.echo(f"note: {f}'s training state was not carried into DST (weights only): {'; '.join(state)}")
            for f in files.get("not_copied") or []:
                click.echo(f"note: {f['path']}: {f['why']}")
    if not dry_run:
        p = log["proof"]
        click.echo(f"proof: {'PASS' if p['passed'] else 'FAIL'}  {p['why']}")
        if not quiet:
            click.echo(f"fix log: {dst}/initcheck-fix.json, {dst}/initcheck-fix.html")
    sys.exit(result.exit_code)
