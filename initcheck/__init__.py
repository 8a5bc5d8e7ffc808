"""initcheck: a quality-control checklist for fine-tuning starting points."""

__version__ = "0.1.0"


def check(target, **options):
    """Check a checkpoint folder/file or an in-memory ``torch.nn.Module``; see ``initcheck.api.check``."""
    from .api import check as _check

    return _check(target, **options)


__all__ = ["check", "__version__"]
from .fix import fix  # noqa: E402,F401 - initcheck.fix(src, dst): write a corrected checkpoint (issue 24)
