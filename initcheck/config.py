"""Settings for one run: what the CLI flags, the project config and the API options resolve to."""

from dataclasses import dataclass, field, fields

from .errors import InputError
from .findings import RANK

TASKS = ("sequence-classification", "token-classification", "question-answering", "multiple-choice",
         "causal-lm", "masked-lm", "seq2seq-lm",
         # beyond text: pixels, waveforms, spectrograms, and images inside a prompt
         "image-classification", "zero-shot-image-classification", "audio-classification", "ctc",
         "speech-seq2seq", "image-text-to-text")


@dataclass
class Settings:
    """Every option of a run, with its default. CLI flags and ``check(**options)`` set these."""

    rules: str | None = None            # rule pack name or file
    select: list = field(default_factory=list)
    ignore: list = field(default_factory=list)
    fail_on: str = "error"
    suppress: list = field(default_factory=list)   # [{"rule", "param", "reason"}]
    baseline: str | None = None
    overrides: dict = field(default_factory=dict)  # pack-shaped overrides from project config
    # what is new
    task: str | None = None
    num_labels: int | None = None
    base: str | None = None
    heads: list = field(default_factory=list)
    trust_remote_code: bool = False
    # probe
    probe: bool | None = None           # None: run when the task model is known and fits
    probe_steps: int = 20
    lr: float = 5e-5
    batch_size: int = 8
    seq_len: int = 32
    seed: int = 0
    device: str = "cpu"
    train: str = "all"
    data: str | None = None
    batch: object = None                # API only: a ready batch dict for the probe
    # output
    progress: object = False            # True (API: a terminal display), or an observer from report.progress
    hashes: bool = False                # SHA-256 of every file (HTML / audit reports)
    hash_all: bool = False              # with hashes: side files too, every file of target.files (--attest)
    command: str | None = None
    config_file: str | None = None      # the project config these settings came from
    config_ignored: str | None = None   # a project config found inside the checked folder, and why it was not applied

    def validate(self):
        if self.fail_on not in RANK:
            raise InputError(None, f"--fail-on must be one of error, warning, info, never; got {self.fail_on!r}")
        if self.task is not None and self.task not in TASKS:
            raise InputError(None, f"unknown task {self.task!r} (tasks: {', '.join(TASKS)})")
        if self.train not in ("all", "heads"):
            raise InputError(None, f"--train must be all or heads, got {self.train!r}")
        if self.num_labels is not None and self.num_labels < 1:
            raise InputError(None, "--num-labels must be at least 1")
        for s in self.suppress:
            if not isinstance(s, dict) or not s.get("rule") or not s.get("reason"):
                raise InputError(self.config_file, "every suppression needs a rule and a non-empty reason")
        return self


def settings_from(**options) -> Settings:
    """Build Settings from keyword options, refusing unknown ones."""
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    return Settings(**options).validate()
