"""Loading a task model from a local folder the way a training script would, shared by the
load-report checks (``origins``) and the probe. Nothing here runs for a plain static scan.

transformers is never handed the user's folder: ``stage`` builds a private temporary folder with
a copy of each small file that passes containment (opened once inside the folder, O_NOFOLLOW,
read through that descriptor) and a link to each weight file's checked real path, and every
``from_pretrained`` here reads that folder with ``trust_remote_code`` passed explicitly (False
unless ``--trust-remote-code``), so transformers never asks on stdin. A ``generation_config.json``
or ``tokenizer.json`` that resolves outside the folder is left out of the copy.
"""

import contextlib
import os
import shutil
import tempfile
import weakref
from pathlib import Path

from .errors import InputError
from .loader import contained

# files transformers reads as weights: linked (after the containment check), never copied
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
# configs, tokenizer and processor files: copied (anything else in the folder is not transformers' to read)
_COPIED_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken", ".spm", ".vocab", ".py")
# processor / tokenizer configs whose auto_map makes transformers import the folder's code
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                "feature_extractor_config.json", "image_processor_config.json", "video_preprocessor_config.json")


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
    folder, _ = stage(recipe["path"], kw["trust_remote_code"])
    from .loader.dcp import torch_state

    state = torch_state(recipe["path"])   # a DCP folder (issue 28): its weights as read by initcheck, None otherwise
    try:
        with quiet_transformers(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = cls.from_pretrained(folder, **kw) if state is None else _from_state(cls, folder, state, kw)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    # offloaded weights may be read lazily from the linked files: the copy lives as long as the model
    model = out[0] if isinstance(out, tuple) else out
    weakref.finalize(model, shutil.rmtree, folder, True)
    return out


def _from_state(cls, folder, state: dict, kw: dict):
    """``from_pretrained`` of weights read by initcheck (a DCP folder, which transformers cannot open),
    with the config of the staged copy: the same load report, missing keys and init of new heads."""
    import transformers

    kw = dict(kw)
    extra = {k: kw.pop(k) for k in ("num_labels",) if k in kw}   # config fields, not model arguments
    kw.pop("local_files_only", None)
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=kw["trust_remote_code"], **extra)
    return cls.from_pretrained(None, config=config, state_dict=state, **kw)


@contextlib.contextmanager
def staged(path, trust_remote_code=False):
    """``stage`` as a context manager: ``(folder, left_out)``, removed on exit."""
    folder, left_out = stage(path, trust_remote_code)
    try:
        yield folder, left_out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def stage(path, trust_remote_code=False) -> tuple:
    """A private copy of the model folder's top-level files for transformers to read.

    Configs, tokenizer and processor files (``_COPIED_SUFFIXES``) are copied through a contained
    descriptor (``contained.read_inside``); weight files are linked to their real path once it is
    checked inside the folder; ``*.py`` files only with ``trust_remote_code``; nothing else. A
    file that resolves outside the folder, is not a regular file, or is over ``[scan]
    transformers_file_max_bytes`` is left out.

    Returns:
        ``(folder, left_out)``: the temporary folder (the caller removes it) and
        ``{file: why}`` for each file left out.
    """
    src = Path(path)
    limit = _file_limit()
    folder = tempfile.mkdtemp(prefix="initcheck-hf-")
    left_out = {}
    try:
        names = sorted(e.name for e in os.scandir(src) if e.is_file() or e.is_symlink())
    except OSError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(src, f"cannot list folder: {e.strerror}") from None
    for name in names:
        if (name.endswith(".py") and not trust_remote_code) or not name.endswith(_WEIGHT_SUFFIXES + _COPIED_SUFFIXES):
            continue
        try:
            if name.endswith(_WEIGHT_SUFFIXES):
                base, inner = contained.resolve_inside(src, name)
                os.symlink(os.path.join(base, inner), os.path.join(folder, name))
            else:
                data = contained.read_inside(src, name, limit, name)
                with open(os.path.join(folder, name), "xb") as f:
                    f.write(data)
        except InputError as e:
            left_out[name] = e.problem
    return folder, left_out


def _file_limit() -> int:
    from .loader.limits import _default_scan

    return int(_default_scan()["transformers_file_max_bytes"])


def remote_code(path) -> dict:
    """``{file: auto_map}`` of the configs in ``path`` that name custom code (``CODE_CONFIGS``)."""
    import json

    found = {}
    for name in CODE_CONFIGS:
        if not (Path(path) / name).is_file():
            continue
        try:
            data = json.loads(contained.read_inside(path, name, _json_limit(), name))
        except (InputError, ValueError, RecursionError):
            continue   # unreadable or outside the folder: transformers is not handed it either
        am = data.get("auto_map") if isinstance(data, dict) else None
        if am:
            found[name] = am
    return found


# what each loader reads: its own config files, and the auto_map keys of config.json it follows
_TOKENIZER_FILES = ("tokenizer", "vocab", "merges", "special_tokens_map", "added_tokens", "spiece", "sentencepiece")
_READS = {
    "tokenizer": (("tokenizer_config.json",), ("AutoTokenizer",), _TOKENIZER_FILES),
    "processor": (CODE_CONFIGS[1:], ("AutoTokenizer", "AutoProcessor", "AutoImageProcessor", "AutoFeatureExtractor",
                                     "AutoVideoProcessor"), _TOKENIZER_FILES + ("preprocessor", "processor",
                                                                                "feature_extractor", "image_processor")),
}


def refusal(path, kind: str, trust_remote_code=False) -> str | None:
    """Why the folder's ``kind`` ("tokenizer" or "processor") must not be handed to transformers,
    or None: custom code it would import (``auto_map``, without ``--trust-remote-code``), or one of
    its files left out of the private copy (outside the folder, not a regular file, too big)."""
    files, auto_keys, prefixes = _READS[kind]
    if not trust_remote_code:
        for name, am in remote_code(path).items():
            if name in files or (name == "config.json" and isinstance(am, dict) and set(am) & set(auto_keys)):
                shown = ", ".join(f"{k} -> {v}" for k, v in list(am.items())[:2]) if isinstance(am, dict) else str(am)
                return (f"{name} names custom code (auto_map {shown[:160]}): the {kind} is not loaded without "
                        "--trust-remote-code (IC402)")
    limit = _file_limit()
    for name in sorted(os.listdir(path)):
        if name.startswith(prefixes) and not name.endswith(".py"):
            try:
                fd = contained.open_inside(path, name)
            except InputError as e:
                return f"{name}: {e.problem}: the {kind} is not loaded"
            size = os.fstat(fd).st_size
            os.close(fd)
            if size > limit:
                return f"{name}: {size} bytes, over the rule pack's transformers_file_max_bytes ({limit}): the {kind} is not loaded"
    return None


def _json_limit() -> int:
    from .loader import MAX_JSON_BYTES

    return MAX_JSON_BYTES
