"""The hard limits on the work one untrusted pickle or archive may cost.

The numbers live in the rule pack (``[scan]`` in rules/default.toml); the loader is handed them,
as it is handed ``safe_globals``. ``default_limits()`` reads the default pack for callers that
open a checkpoint without one (base checkpoints, timm folders).
"""

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    pickle_max_bytes: int
    pickle_max_opcodes: int
    pickle_max_memo: int
    pickle_max_items: int
    pickle_max_depth: int
    zip_max_members: int
    zip_max_bytes: int
    side_file_max_bytes: int
    torch_load_max_bytes: int
    npy_header_max_bytes: int
    zip_max_ratio: int
    zip_ratio_min_bytes: int
    json_max_bytes: int
    max_files: int
    max_tensors: int
    sparse_min_bytes: int
    sparse_max_ratio: int
    walk_limit_is_error: bool
    dcp_assemble_max_bytes: int

    @classmethod
    def from_scan(cls, scan: dict) -> "Limits":
        """From a pack's ``[scan]`` table (keys missing there come from the default pack)."""
        base = _default_scan()
        return cls(**{f.name: (bool if f.type is bool else int)(scan.get(f.name, base[f.name])) for f in fields(cls)})


_CACHE = {}


def _default_scan() -> dict:
    if "scan" not in _CACHE:
        import tomllib

        from ..resources import data_dir

        with open(data_dir("rules") / "default.toml", "rb") as f:
            _CACHE["scan"] = tomllib.load(f)["scan"]
    return _CACHE["scan"]


def default_limits() -> Limits:
    return Limits.from_scan({})
