"""Find the data that ships with initcheck: rule packs (rules/) and templates (templates/).

In a wheel they are mapped into ``initcheck/_data/`` at build time; in a source checkout or an
editable install they sit at the top of the repository.
"""

from pathlib import Path


def data_dir(kind: str) -> Path:
    """The folder holding ``kind`` ("rules" or "templates")."""
    here = Path(__file__).resolve().parent   # (not importlib.resources: 9 ms of start-up, same answer)
    packaged = here / "_data" / kind
    if packaged.is_dir():
        return packaged
    source = here.parent / kind
    if source.is_dir():
        return source
    raise FileNotFoundError(f"initcheck data folder {kind!r} is missing from the installation")
