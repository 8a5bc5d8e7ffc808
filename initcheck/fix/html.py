"""The fix log as a self-contained HTML page (``DST/initcheck-fix.html``): no script, no external file."""

import math


def render(log: dict) -> str:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from ..resources import data_dir

    env = Environment(loader=FileSystemLoader(str(data_dir("templates"))), autoescape=select_autoescape(["j2", "html"]))
    proof = log.get("proof") or {}
    return env.get_template("fix.html.j2").render(log=log, proof=proof, curve=curve(proof.get("loss") or [],
                                                                                       proof.get("expected_initial_loss")))


def curve(losses, expected=None, width=480, height=160, pad=24) -> dict | None:
    """Polyline points of a loss curve (and the expected loss at init as a level line), in SVG units."""
    ys = [float(x) for x in losses if isinstance(x, (int, float)) and math.isfinite(x)]
    if len(ys) < 2:
        return None
    levels = ys + ([float(expected)] if isinstance(expected, (int, float)) else [])
    lo, hi = min(levels), max(levels)
    span = (hi - lo) or 1.0

    def y(v):
        return round(height - pad - (v - lo) / span * (height - 2 * pad), 1)

    step = (width - 2 * pad) / (len(ys) - 1)
    points = " ".join(f"{round(pad + i * step, 1)},{y(v)}" for i, v in enumerate(ys))
    return {"width": width, "height": height, "points": points, "pad": pad,
            "expected_y": y(float(expected)) if isinstance(expected, (int, float)) else None,
            "first": ys[0], "last": ys[-1], "lo": lo, "hi": hi}
