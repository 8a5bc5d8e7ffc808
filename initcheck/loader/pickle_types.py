"""The parse of a pickle-based checkpoint, shared by the scan (``pickle_scan``, which makes it)
and the reader (``pickle_reader``, which reads tensors from it): one home, so neither imports the
other.
"""

import _compat_pickle
from dataclasses import dataclass, field

from .limits import Limits
from .zipfile_strict import StrictZip

# legacy torch.load unpickles: magic number, protocol version, sys_info, the object, storage keys
LEGACY_PICKLES = 5
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
UNRESOLVED = "<unresolved>"
ZIP_MAGIC = b"PK\x03\x04"


class PickleScanError(Exception):
    """The opcode stream is malformed, ambiguous or too large to scan.

    ``ops``: the opcodes read before the failure; ``globals``: the globals they import. A loader
    runs a stream up to where it breaks (and past what only our scan refuses), so these still count.
    ``bound``: a pack limit stopped the scan (what follows is unknown), not malformed bytes.
    """

    def __init__(self, message: str, ops=None, globals=None, bound: bool = False):
        super().__init__(message)
        self.ops = ops or []
        self.globals = globals or []
        self.bound = bound


@dataclass
class Pickle:
    """One pickle as a loader reads it: its opcodes ``(name, arg, pos)`` and where it ends."""

    where: str
    ops: list
    start: int
    end: int


@dataclass
class Parsed:
    """A pickle-based checkpoint, parsed once for the scan and the reader.

    ``kind`` is ``"zip"`` (torch.save), ``"legacy"`` (pre-1.6 torch.save: ``pickles`` holds all
    five and ``data_start`` is where the raw storages begin) or ``"pickle"`` (any other pickle
    file: what ``torch.load`` would refuse after running its first pickle).
    """

    kind: str
    buf: object  # the mmap of the file
    globals: list = field(default_factory=list)
    pickles: list = field(default_factory=list)
    zip: StrictZip | None = None
    data_start: int = 0
    limits: Limits | None = None

    def close(self):
        # numpy views may still point into the map (they do not pin it: closing it would leave them
        # dangling); dropping our references is enough, the map closes when the last view goes away
        self.zip = None
        self.pickles = []
        self.buf = None


def compat_name(module: str, name: str) -> tuple:
    """Python 2 names (``__builtin__``, ``copy_reg``, ...) as Python 3 and torch resolve them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name
