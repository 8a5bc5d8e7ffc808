"""Loading a task model from a local folder the way a training script would, shared by the
load-report checks (``origins``) and the probe. Nothing here runs for a plain static scan."""

import contextlib
import os


def mem_available() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextlib.contextmanager
def quiet_transformers():
    """transformers prints load reports and progress bars; initcheck's own report says it better."""
    import transformers.utils.logging as tl

    level = tl.get_verbosity()
    bars = tl.is_progress_bar_enabled()
    tl.set_verbosity_error()
    tl.disable_progress_bar()
    try:
        yield
    finally:
        tl.set_verbosity(level)
        if bars:
            tl.enable_progress_bar()


def model_class(recipe: dict):
    """The transformers class the recipe names (a concrete class or an Auto class)."""
    import transformers

    cls = getattr(transformers, recipe["model_class"], None)
    if cls is None:
        raise ValueError(f"transformers has no class {recipe['model_class']!r}")
    return cls


def from_pretrained(recipe: dict, seed: int, **kw):
    """``from_pretrained(local_files_only=True)`` of the recipe's model, quiet and seeded.

    Args:
        recipe: ``scan.facts["task_model"]``: path, model_class, num_labels, trust_remote_code.
        seed: seeds a private RNG, so new heads are drawn the same way on every run.
        **kw: further ``from_pretrained`` arguments (dtype, output_loading_info, ...).
    """
    import torch

    kw = {"local_files_only": True, "trust_remote_code": bool(recipe.get("trust_remote_code")), **kw}
    if recipe.get("num_labels"):
        kw["num_labels"] = int(recipe["num_labels"])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cls = model_class(recipe)
    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls.from_pretrained(str(recipe["path"]), **kw)
