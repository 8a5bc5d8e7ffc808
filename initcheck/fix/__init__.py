"""``initcheck fix``: write a corrected starting checkpoint, proven by a re-check and a probe.

Planners (``heads``, ``norms``, ``prefix``, ``rows``, ``adapters``) turn SRC's findings into
``remedy.Step``s; ``write`` copies SRC to DST with the changed weight files rewritten; ``proof``
checks DST with the probe. ``run.fix`` ties them together.
"""


def fix(src, dst=None, only=None, dry_run=False, seed=0, force=False, revision=None, **options):
    """Fix the checkpoint at ``src`` into the folder ``dst``.

    Args:
        src: a model folder or checkpoint file (never written to), or a Hub id / ``models--org--name``
            folder in the local Hugging Face cache (never downloaded).
        dst: the folder to write (must not exist unless ``force``); not needed with ``dry_run``.
        only: rule ids whose remedies apply (``["IC102", "IC105"]``); all when None.
        dry_run: plan only, write nothing.
        seed: seeds every re-initialisation and the probe on DST.
        revision: the cached revision of a Hub id (default: what ``main`` points at).
        **options: any ``initcheck.config.Settings`` field (``task``, ``num_labels``, ``rules``, ``probe``...).

    Returns:
        FixResult: ``.exit_code`` (0 fixed and proven), ``.log`` (the fix log), ``.before``, ``.after``.

    Example:
        >>> r = initcheck.fix("runs/start", "runs/start-fixed")
        >>> r.exit_code, [s["names"] for s in r.log["steps"]]
        (0, [['classifier.weight', 'classifier.bias']])
    """
    from ..config import settings_from
    from .run import fix as _fix

    return _fix(src, dst, settings_from(**options), only=only, dry_run=dry_run, seed=seed, force=force, revision=revision)
