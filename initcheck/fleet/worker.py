"""The child process of one member: ``python -m initcheck.fleet.worker ATTEMPT FAULT -- check ...``.

It runs initcheck's own CLI (``initcheck check``) in this fresh process, so that a member's report
and exit code are exactly those of ``initcheck check`` alone, and a member that crashes (a SIGKILL,
the OOM killer) takes only this process down.

FAULT is a test hook (``INITCHECK_FLEET_FAULT`` in the fleet's environment): ``kill:GLOB`` makes the
child of every member whose target matches GLOB kill itself with SIGKILL before checking,
``kill-once:GLOB`` only on the first attempt (initcheck.fleet.ray_engine adds ``kill-task:GLOB``, which
kills the Ray worker itself); several are separated by commas. "-" means none.
"""

import os
import signal
import sys


def main(argv: list) -> None:
    attempt, fault, rest = int(argv[0]), argv[1], argv[argv.index("--") + 1:]
    target = rest[1]
    if fault != "-" and _matches(fault, target, attempt):
        os.kill(os.getpid(), signal.SIGKILL)
    from ..cli import main as cli

    sys.argv = ["initcheck", *rest]   # the report's "command" reads as the check it is
    cli.main(args=rest, prog_name="initcheck")


def _matches(fault: str, target: str, attempt: int) -> bool:
    """Whether one of the comma-separated faults (``kind:GLOB``) hits this target on this attempt."""
    import fnmatch

    for one in fault.split(","):
        kind, _, pattern = one.partition(":")
        if fnmatch.fnmatch(os.path.basename(target.rstrip("/")), pattern) and \
                (kind == "kill" or (kind == "kill-once" and attempt == 1)):
            return True
    return False


if __name__ == "__main__":
    main(sys.argv[1:])
