"""The fleet's tunable numbers, from fleet.toml beside this file (never scattered in code)."""

import functools
import tomllib
from pathlib import Path


@functools.cache
def knobs() -> dict:
    """fleet.toml as a dict: ``knobs()["memory"]["child_bytes"]``."""
    with open(Path(__file__).with_name("fleet.toml"), "rb") as f:
        return tomllib.load(f)
