"""Project config: ``[tool.initcheck]`` in the nearest pyproject.toml, or an initcheck.toml.

(Minimal for now; the CI-gate issue completes it.)
"""

import json

from .config import Settings


def load_project_settings(config_file=None) -> Settings:
    s = Settings()
    s.config_file = config_file
    return s


def describe(settings: Settings) -> str:
    from dataclasses import asdict

    return json.dumps({k: v for k, v in asdict(settings).items() if k != "batch"}, indent=2, default=str)
