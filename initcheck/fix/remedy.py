"""What a remedy is: the contract between the planners (one module per kind of defect) and the
writer that applies them to a copy of the checkpoint.

A planner reads the check's findings and the scan (never the user's files directly) and returns
``Step``s. A step names the tensors it rewrites (as the report names them: ``FILE:KEY`` for side
files), the rule that asked for it, and the remedy in words that end up in the fix log. ``apply``
receives those tensors as torch tensors (CPU, the stored dtype) and a seeded generator, and
returns the new tensors under the same names, same shapes and dtypes. A planner that cannot
remedy a finding returns an ``Unfixable`` instead, with the reason the user reads.
"""

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Step:
    names: tuple                 # tensors rewritten, as the report names them
    rule: str                    # the rule id whose finding asked for it (IC102, IC702, ...)
    remedy: str                  # e.g. "normal(0, 0.02) from BertPreTrainedModel._init_weights"
    apply: Callable | None = None   # (dict[name, torch.Tensor], torch.Generator) -> dict[name, torch.Tensor]
    renames: dict = field(default_factory=dict)   # old key -> new key (remedy 3: no values change)
    rows: list | None = None     # rows rewritten, when only some are (vocabulary rows)


@dataclass
class Unfixable:
    name: str
    rule: str
    reason: str                  # "pretrained weight: reload from the source", ...
