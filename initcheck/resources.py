"""Find the data that ships with initcheck: rule packs (rules/) and templates (templates/).

In a wheel they are mapped into ``initcheck/_data/`` at build time; in a source checkout or an
editable install they sit at the top of the repository.
"""

from importlib import resources
from pathlib import Path


def data_dir(kind: str) -> Path:
    """The folder holding ``kind`` ("rules" or "templates")."""
    packaged = resources.files("initcheck") / "_data" / kind
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / kind
    if source.is_dir():
        return source
    raise FileNotFoundError(f"initcheck data folder {kind!r} is missing from the installation")
