"""Integrations: a transformers ``Trainer`` callback, and the pre-commit hook entry point.

Example:
    >>> from initcheck.integrations import InitCheckCallback
    >>> trainer = Trainer(model=model, args=args, train_dataset=ds,
    ...                   callbacks=[InitCheckCallback(report_path="initcheck.json")])
    >>> trainer.train()   # raises InitCheckFailed before the first optimizer step if the model fails
"""

import logging
import sys
from pathlib import Path

from transformers import TrainerCallback

logger = logging.getLogger("initcheck")

_MAX_NAMED = 8


class InitCheckFailed(RuntimeError):
    """Raised by ``InitCheckCallback`` to stop training; ``.report`` holds the ``Report``."""

    def __init__(self, report):
        self.report = report
        super().__init__(failure_message(report))


def failure_message(report) -> str:
    """One paragraph naming the failing parameters and rules."""
    from .findings import RANK

    level = RANK[report.settings.fail_on]
    bad = [f for f in report.findings if f.active and RANK[f.severity] >= level]
    params = sorted({f.param for f in bad if f.param})
    named = ", ".join(params[:_MAX_NAMED]) + (f" and {len(params) - _MAX_NAMED} more" if len(params) > _MAX_NAMED else "")
    lines = [f"initcheck stopped training before the first optimizer step: {len(bad)} finding(s) at or above "
             f"'{report.settings.fail_on}'" + (f" in {named}" if named else "")]
    for f in bad[:_MAX_NAMED]:
        lines.append(f"  {f.rule} {f.name} {f.param or '(model)'}: {f.message}")
    lines.append("Fix the initialisation, suppress with a reason in [tool.initcheck], or pass warn_only=True.")
    from .report.terminal import printable   # names and messages may carry the checkpoint's control characters

    return "\n".join(printable(line) for line in lines)


def summary_line(report) -> str:
    s = report.summary()
    extra = "".join(f", {s[k]} {k}" for k in ("suppressed", "baselined") if s[k])
    return (f"initcheck: {'PASS' if report.passed else 'FAIL'} {s['error']} error(s), {s['warning']} warning(s), "
            f"{s['info']} info{extra} (fail-on: {report.settings.fail_on}, {len(report.scan.records)} tensors)")


def write_report(report, path) -> Path:
    """Write ``report`` in the format its suffix names: .json, .html, .sarif, .md, .xml (JUnit), else text."""
    path = Path(path)
    fmt = {".json": "json", ".html": "html", ".htm": "html", ".sarif": "sarif", ".md": "markdown",
           ".xml": "junit"}.get(path.suffix.lower(), "text")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.to_json() + "\n" if fmt == "json" else report.render(fmt), encoding="utf-8")
    return path


class InitCheckCallback(TrainerCallback):
    """Check the real model at the start of ``Trainer.train()`` and stop a run that would be wasted.

    Args:
        fail_on: lowest severity that stops training ("error", "warning", "info", "never");
            None keeps the project config's ``fail-on`` (default "error").
        probe: also run the short probe training run (on a copy; costs seconds to minutes).
        report_path: write the report here; the suffix picks the format (.json, .html, .sarif, .md).
        warn_only: log the failure instead of raising.
        config_file: the project config; default: the nearest ``initcheck.toml`` or pyproject.toml
            with ``[tool.initcheck]``, searched upward from the current directory, as the CLI does.
            Its settings (pack, suppressions, ...) come first, the options given here on top.
        **check_options: any other option of ``initcheck.check`` (``rules``, ``select``,
            ``suppress``, ``heads``, ``pretrained``, ``baseline``, ...).

    Raises:
        InitCheckFailed: from ``on_train_begin``, before any optimizer step, when the check fails.
    """

    def __init__(self, fail_on=None, probe=False, report_path=None, warn_only=False, config_file=None, **check_options):
        self.fail_on = fail_on
        self.config_file = config_file
        self.probe = probe
        self.report_path = report_path
        self.warn_only = warn_only
        self.check_options = check_options
        self.report = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            logger.warning("initcheck: the Trainer passed no model; nothing checked")
            return control
        self.report = report = self._check(model)
        main = getattr(state, "is_world_process_zero", True)
        if main:
            line = summary_line(report)
            logger.info(line)
            print(line, file=sys.stderr)
            if self.report_path:
                where = write_report(report, self.report_path)
                logger.info("initcheck: report written to %s", where)
        if not report.passed:
            if self.warn_only:
                if main:
                    msg = failure_message(report).replace("stopped training", "would stop training")
                    logger.warning(msg)
                    print(msg, file=sys.stderr)
            else:
                raise InitCheckFailed(report)
        return control


    def _check(self, model):
        """The same settings as ``initcheck`` on the command line: project config, then our options."""
        from dataclasses import fields

        from .api import run
        from .config import Settings
        from .project import load_project_settings

        options = dict(self.check_options)
        if "pretrained" in options:
            options["base"] = options.pop("pretrained")
        known = {f.name for f in fields(Settings)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(unknown)}")
        # the folders under review: --base (pretrained=) and the folder the model was loaded from; a
        # project config inside one of them is the checkpoint's, not the project's: not applied
        source = getattr(getattr(model, "config", None), "_name_or_path", None)
        settings = load_project_settings(self.config_file, checked=(options.get("base"), source))
        if settings.config_ignored:
            logger.warning("initcheck: %s", settings.config_ignored)
        options.update(probe=self.probe, **({"fail_on": self.fail_on} if self.fail_on is not None else {}))
        for key, value in options.items():
            if key == "suppress":   # suppressions add up: the project's and the callback's
                value = list(settings.suppress) + list(value)
            setattr(settings, key, value)
        return run(model, settings.validate())


# --- pre-commit -------------------------------------------------------------------------------

_CKPT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_FOLDER_FILES = ("config.json", "adapter_config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def _is_checkpoint_file(arg: str) -> bool:
    p = Path(arg)
    return p.suffix in _CKPT_SUFFIXES or p.name in _FOLDER_FILES


def _takes_value(arg: str) -> bool:
    """Is ``arg`` an option of ``initcheck check`` that consumes the next argument?"""
    from .cli import check

    for p in check.params:
        if arg in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())):
            return not getattr(p, "is_flag", False) and not getattr(p, "count", False)
    return False


def targets_for(files) -> list:
    """Changed files -> the checkpoints to check: a model folder once, or a standalone file."""
    out = []
    for f in files:
        p = Path(f)
        folder = p.parent
        is_hf_folder = any((folder / n).is_file() for n in _FOLDER_FILES)
        if is_hf_folder:
            target = str(folder)
        elif p.suffix in _CKPT_SUFFIXES and p.is_file():
            target = str(p)
        else:
            continue  # a deleted file or a stray config.json
        if target not in out:
            out.append(target)
    return sorted(out)


def pre_commit_main(argv=None) -> int:
    """``python -m initcheck.integrations [initcheck options] [--] FILES...`` (the pre-commit hook).

    Options come first (from the hook's ``args:``), the changed files last (pre-commit appends
    them). Each checkpoint folder is checked once; the exit code is the worst one.
    """
    from .cli import main

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        i = argv.index("--")
        options, files = argv[:i], argv[i + 1:]
    else:
        n = len(argv)
        while n > 0 and _is_checkpoint_file(argv[n - 1]) and not (n > 1 and _takes_value(argv[n - 2])):
            n -= 1
        options, files = argv[:n], argv[n:]
    worst = 0
    for target in targets_for(files):
        from .report.terminal import printable

        print(f"initcheck: checking {printable(target)}", flush=True)
        try:
            main.main(args=["check", *options, target], prog_name="initcheck", standalone_mode=False)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 2
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(pre_commit_main())
