"""Time the HTML report for a 1,000-tensor model (floor: under 2 s), and the other formats.

Builds a synthetic BERT-shaped safetensors checkpoint with 1,000 tensors in a temporary folder,
checks it once (no probe), then times ``render("html", data)`` alone: the first render (which
compiles the template and loads fonts, as a CLI run pays it) against the floor, a warm second one,
and, apart, the one-off import of matplotlib and jinja2.

    python benchmarks/bench_report.py
"""

import json
import sys
import tempfile
import time
from pathlib import Path

FLOOR_S = 2.0
N_TENSORS = 1000


def build(folder: Path, n_tensors: int = N_TENSORS) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    leaves = [("attention.self.query.weight", (64, 64)), ("attention.self.query.bias", (64,)),
              ("attention.self.key.weight", (64, 64)), ("attention.self.value.weight", (64, 64)),
              ("attention.output.dense.weight", (64, 64)), ("attention.output.LayerNorm.weight", (64,)),
              ("intermediate.dense.weight", (128, 64)), ("output.dense.weight", (64, 128)),
              ("output.LayerNorm.weight", (64,)), ("output.dense.bias", (64,))]
    tensors, i = {}, 0
    while len(tensors) < n_tensors - 3:
        block, k = divmod(i, len(leaves))
        name, shape = leaves[k]
        value = np.ones(shape, np.float32) if "LayerNorm" in name else rng.normal(0, 0.02, shape).astype(np.float32)
        tensors[f"bert.encoder.layer.{block}.{name}"] = value
        i += 1
    tensors["bert.embeddings.word_embeddings.weight"] = rng.normal(0, 0.02, (500, 64)).astype(np.float32)
    tensors["classifier.weight"] = np.zeros((3, 64), np.float32)
    tensors["classifier.bias"] = np.zeros((3,), np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": "bert", "hidden_size": 64,
              "num_hidden_layers": i // len(leaves) + 1, "num_attention_heads": 4, "intermediate_size": 128,
              "vocab_size": 500, "initializer_range": 0.02}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def main() -> int:
    import initcheck

    with tempfile.TemporaryDirectory(prefix="initcheck-bench-report-") as tmp:
        folder = build(Path(tmp) / "model")
        t0 = time.perf_counter()
        data = initcheck.check(folder, probe=False, hashes=True, command="bench").to_dict()
        check_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    from initcheck.report import html as _html  # noqa: F401 - matplotlib and jinja2
    from initcheck.report import render

    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    html = render("html", data)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    render("html", data)
    warm = time.perf_counter() - t0
    others = {}
    for fmt in ("sarif", "junit", "markdown", "json"):
        t0 = time.perf_counter()
        text = render(fmt, data)
        others[fmt] = (time.perf_counter() - t0, len(text))
    print(f"model: {data['target']['tensors']} tensors, {len(data['findings'])} findings (check took {check_s:.2f} s)")
    print(f"html render: {cold:.2f} s first (template compile, font cache), {warm:.2f} s warm, "
          f"plus {imports:.2f} s importing matplotlib/jinja2 once; {len(html) / 1024:.0f} KiB  [floor {FLOOR_S:.1f} s]")
    for fmt, (s, size) in others.items():
        print(f"{fmt} render: {s * 1000:.0f} ms, {size / 1024:.0f} KiB")
    import os

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures scale with it)")
    ok = cold < FLOOR_S
    print("PASS" if ok else "FAIL: the HTML render is over the floor")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
