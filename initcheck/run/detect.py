"""Recognising a training output folder and ordering its checkpoints by step."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# the files from_pretrained (or a PEFT adapter) would read as weights
_WEIGHTS = re.compile(r"^(model|pytorch_model|adapter_model)(-\d+-of-\d+)?\.(safetensors|bin)$|\.safetensors\.index\.json$|\.bin\.index\.json$")


@dataclass
class Checkpoint:
    """One saved state of the run: a folder and the global step it was written at."""

    path: Path
    step: int | None
    has_weights: bool

    @property
    def label(self) -> str:
        return self.path.name if self.step is None else f"step {self.step}"


@dataclass
class RunFolder:
    """A training output folder: its checkpoints (by step, the final save last) and its logs."""

    root: Path
    checkpoints: list = field(default_factory=list)   # every checkpoint-N/ and a final save, by step
    state_file: Path | None = None                     # the newest trainer_state.json
    event_files: list = field(default_factory=list)    # TensorBoard event files under the folder

    @property
    def weighted(self) -> list:
        """The checkpoints that hold weights, oldest first."""
        return [c for c in self.checkpoints if c.has_weights]


def _has_weights(folder: Path) -> bool:
    from ..loader.dcp import find_dcp

    try:
        names = {e.name for e in os.scandir(folder) if e.is_file()}
    except OSError:
        return False
    # a DCP checkpoint (FSDP, accelerate: .metadata + *.distcp, here or in pytorch_model_fsdp_0/) holds weights too
    return any(_WEIGHTS.search(n) for n in names) or find_dcp(folder, names) is not None


def _read_state(path: Path):
    """trainer_state.json through the loader's bounded reader (the pack's json_max_bytes: a sparse 3 GB
    file is refused, never read whole, and a symlink out of its folder is not followed); None when it
    cannot be read."""
    from ..errors import InputError
    from ..loader import _inside, read_json

    try:
        _inside(path.parent, path.name)
        return read_json(path, path.name, "trainer_state.json")
    except InputError:
        return None


def _state_has_log(path: Path) -> bool:
    """A trainer_state.json worth a post-mortem: it has a log, or it cannot be read (said as a finding)."""
    data = _read_state(path)
    return data is None or "log_history" in data


def find_run(path) -> RunFolder | None:
    """The run in ``path``, or None when it is a plain model folder (or a file).

    A run folder holds ``checkpoint-<step>/`` subfolders with weights or a trainer_state.json,
    or a ``trainer_state.json`` with a ``log_history`` (or one that cannot be read). A final
    model saved at the top of the folder counts as the last checkpoint.

    Example:
        >>> find_run("out/").checkpoints[-1].label
        'step 60'
    """
    root = Path(path)
    if not root.is_dir():
        return None
    subs = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return None
    for e in entries:
        m = _CHECKPOINT.match(e.name)
        if m and e.is_dir(follow_symlinks=False):
            sub = Path(e.path)
            if _has_weights(sub) or (sub / "trainer_state.json").is_file():
                subs.append(Checkpoint(sub, int(m.group(1)), _has_weights(sub)))
    top_state = root / "trainer_state.json"
    if not subs and not (top_state.is_file() and _state_has_log(top_state)):
        return None
    subs.sort(key=lambda c: c.step)
    run = RunFolder(root=root, checkpoints=subs)
    if _has_weights(root):
        last = subs[-1].step if subs else None
        run.checkpoints.append(Checkpoint(root, _final_step(top_state, last), True))
    # the newest log: the top-level one (written at the end) or the latest checkpoint's
    states = [c.path / "trainer_state.json" for c in reversed(subs)]
    run.state_file = top_state if top_state.is_file() else next((s for s in states if s.is_file()), None)
    run.event_files = _event_files(root)
    return run


def _final_step(state: Path, last: int | None) -> int | None:
    step = (_read_state(state) or {}).get("global_step") if state.is_file() else None
    return step if isinstance(step, int) and not isinstance(step, bool) else last


def _event_files(root: Path, limit: int = 200) -> list:
    """TensorBoard event files (``events.out.tfevents.*``) anywhere under the run, symlinks not followed."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        out += [Path(dirpath) / n for n in sorted(filenames) if n.startswith("events.out.tfevents.")]
        if len(out) >= limit:
            break
    return out[:limit]
