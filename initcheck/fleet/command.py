"""``initcheck fleet SOURCES... -o OUT_DIR``: the click command. Every option of ``initcheck check``
(pack, config, --fail-on, probe settings) applies to each member; it reuses cli.py's own options.

cli.py's last line imports this module (``main.add_command``): import ``initcheck.cli`` to get the
command, not this module first (the two import each other).
"""

import os
import sys

import click

from ..cli import _fail, build_settings
from ..errors import InputError
from .options import absolute_paths, member_argv, member_options


@click.command("fleet")
@click.argument("sources", nargs=-1)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for every member's report, fleet.jsonl, index.html (and fleet.sarif).")
@click.option("--jobs", type=int, default=None, help="Members checked at once by the process pool (default: the cores).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              help="Run each member as a Ray task: --ray alone starts a local cluster; --ray auto / HOST:PORT / "
                   "ray://HOST:PORT joins one (pip install 'initcheck[ray]').")
@click.option("--html", is_flag=True, default=False, help="Also write each member's HTML report.")
@click.option("--sarif", is_flag=True, default=False, help="Also write fleet.sarif: every member's SARIF run in one log.")
@click.option("--force", is_flag=True, default=False, help="Check every member again, even unchanged ones.")
@click.option("--timeout", "timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds one member's check may run before it is killed and recorded as failed "
                   "(default: 7200, initcheck/fleet/fleet.toml; 0: no limit).")
@click.option("-q", "--quiet", is_flag=True, default=False, help="No progress lines; the summary line only.")
@member_options
def fleet(sources, out_dir, jobs, ray_address, html, sarif, force, timeout, quiet, revision, debug, **cli):
    """Check many checkpoints in one command and summarise them in OUT_DIR.

    \b
    SOURCES, any mix of:
      model folders or files          runs/a/ model.safetensors
      globs                           'sweep/*/checkpoint-*'
      a list file                     @models.txt (a path or Hub id a line)
      a Hugging Face cache            ~/.cache/huggingface/hub, or hf-cache:
      run folders                     checked as post-mortems
      a bucket prefix                 s3://registry/models/ (each model under it)
    Exit code: the worst member's (2: a member could not be checked, or its
    process died twice; 1: a member failed; 0: all passed)."""
    from . import run_fleet
    from .digest import settings_key
    from .ray_engine import looks_like_address
    from .sources import expand

    try:
        if ray_address and ray_address != "local" and not looks_like_address(ray_address):
            sources, ray_address = (ray_address, *sources), "local"   # `--ray models/*`: click took a source as the address
        if not sources:
            raise InputError(None, "name at least one SOURCE (a model folder or file, a glob, @list.txt, a cache)")
        if jobs is not None and jobs < 1:
            raise InputError(None, f"--jobs {jobs} is impossible: it must be at least 1")
        remote_gpu = ray_address and ray_address != "local" and str(cli.get("device") or "").startswith("cuda")
        # on a cluster the GPUs are the workers', not this head node's: each member's check tests its own
        settings = build_settings(**{**cli, "device": None} if remote_gpu else cli)
        if remote_gpu:
            settings.device = cli["device"]
        from ..packs import pack_for

        pack = pack_for(settings)
        members = expand(sources, revision)
        for m in members:
            if m.unlisted and not quiet:
                click.echo(f"fleet: {m.target} could not be listed ({m.unlisted}): checked as one member, whose own "
                           "check says why", err=True)
        out_real = os.path.realpath(out_dir)
        inside = [m for m in members if os.path.isdir(m.target) and _within(out_real, m.target)]
        if inside:
            raise InputError(out_dir, f"is inside the checked folder {inside[0].target}: initcheck never writes into "
                                      "the folder it checks; write the fleet's reports elsewhere")
        members = [m for m in members if not _within(os.path.realpath(m.target), out_real)]   # our own reports
        if not members:
            raise InputError(None, "no members: every source lies inside OUT_DIR")
        os.makedirs(out_dir, exist_ok=True)
        argv = member_argv(absolute_paths(cli) if ray_address else cli)
        key = settings_key(settings, pack, argv, html)
        summary = run_fleet(members, out_dir, settings, pack, argv, key, html=html, sarif=sarif, force=force,
                            ray_address=ray_address, jobs=jobs, fault=os.environ.get("INITCHECK_FLEET_FAULT"), timeout=timeout,
                            echo=None if quiet else (lambda line: click.echo(line, err=True)))
        if quiet:
            click.echo(f"initcheck fleet: {len(summary['rows'])} member(s), exit {summary['exit_code']}; "
                       f"{os.path.join(out_dir, 'index.html')}", err=True)
    except Exception as e:  # noqa: BLE001 - every failure of the fleet itself is one line and exit 2
        _fail(e, debug)
    sys.exit(summary["exit_code"])


def _within(path: str, folder: str) -> bool:
    folder = os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder
