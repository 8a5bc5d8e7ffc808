"""The options of ``initcheck check`` that each fleet member takes, and how they are passed on."""

# options of `initcheck check` that are about its own outputs and terminal, not about a member's check:
# the fleet has its own (-o OUT_DIR, --html, --sarif, -q); --revision and --debug apply to the fleet itself
_NOT_PER_MEMBER = {"formats", "outputs", "quiet", "verbose", "write_baseline"}
_FLEET_LEVEL = {"revision", "debug"}


def _check_params() -> list:
    """The click options of ``initcheck check`` that a member takes, as cli.check_options builds them."""
    from ..cli import (
        check_options,  # here, not at the top: cli.py imports the fleet's command
    )

    def probe():
        pass

    check_options(probe)   # click keeps a function's options last-declared first
    return [p for p in reversed(probe.__click_params__) if p.name not in _NOT_PER_MEMBER]


def member_options(f):
    """Decorate ``f`` with every per-member option of ``initcheck check``."""
    f.__click_params__ = getattr(f, "__click_params__", []) + list(reversed(_check_params()))
    return f


def member_argv(values: dict) -> list:
    """The command-line options each member's ``initcheck check`` gets, rebuilt from the parsed values
    (only those the user gave: a default stays the check's own)."""
    argv = []
    for p in _check_params():
        if p.name in _FLEET_LEVEL or p.name not in values:
            continue
        v, flag = values[p.name], next(o for o in p.opts if o.startswith("--"))
        if v is None or v is False or v == ():
            if v is False and p.secondary_opts:   # --no-probe
                argv.append(p.secondary_opts[0])
            continue
        if p.is_flag:
            argv.append(flag)
        elif p.multiple:
            for item in v:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(v)]
    return argv


# options naming files, made absolute for the members: a Ray task may start in another folder
PATH_OPTIONS = ("config_file", "base", "data", "baseline", "rules")


def absolute_paths(values: dict) -> dict:
    """``values`` with every option that names an existing file or folder made absolute (a pack
    name such as ``strict`` is not a path and stays as it is)."""
    import os

    return {k: os.path.abspath(v) if k in PATH_OPTIONS and isinstance(v, str) and os.path.exists(v) else v
            for k, v in values.items()}
