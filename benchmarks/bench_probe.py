"""Benchmark: the default probe on a BERT-base-size model (BertConfig() defaults, ~110M params).

Measures, in one run and side by side:
  1. the whole `initcheck` run (scan + task-model load + 20-step probe), against a 60 s floor;
  2. the instrumentation overhead: the same 20 AdamW steps on the same batch with the probe's
     Recorder + activation watch vs the bare loop, against a 20% ceiling.

Run: python benchmarks/bench_probe.py [--steps 20] [--keep DIR]
Not a timed test: machines differ; it prints the figures and exits 1 if a floor is missed.
"""

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch


def build(folder: Path):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=3))
    model.save_pretrained(folder)
    return model


def timed_loop(model, batch, steps, instrumented):
    from initcheck.probe import hooks, loop
    from initcheck.probe import model as M

    model = copy.deepcopy(model)
    model.eval()
    params = dict(model.named_parameters())
    rec = loop.Recorder(params) if instrumented else None
    heads = M.head_modules(model, [])
    watch = hooks.ActivationWatch(model, heads + M.last_blocks(model), heads, 0.99, -4.0) if instrumented else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        start = time.perf_counter()
        loop.train(model, batch, params, steps, 5e-5, rec, (lambda: watch) if watch else None)
        return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--keep", help="write the model here instead of a temp dir")
    args = ap.parse_args()
    import initcheck
    from initcheck.probe import batches

    tmp = tempfile.TemporaryDirectory()
    folder = Path(args.keep or tmp.name) / "bert-base-cls"
    model = build(folder)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: BertForSequenceClassification, {n / 1e6:.1f}M parameters; torch threads {torch.get_num_threads()}")

    start = time.perf_counter()
    report = initcheck.check(folder, probe=True, probe_steps=args.steps)
    whole = time.perf_counter() - start
    probe = report.scan.probe
    print(f"whole initcheck run: {whole:.1f} s (probe {probe['seconds']:.1f} s, {probe['status']}, "
          f"loss {probe['loss'][0]:.3f} -> {probe['loss'][-1]:.3f}); floor 60 s")

    batch = batches.synthetic(model, "sequence-classification", 8, 32, seed=0)
    model.eval()
    # alternate bare/instrumented so that machine noise hits both alike
    bare, inst = [], []
    for _ in range(2):
        bare.append(timed_loop(model, batch, args.steps, False))
        inst.append(timed_loop(model, batch, args.steps, True))
    b, i = min(bare), min(inst)
    overhead = (i - b) / b
    print(f"{args.steps} steps: bare {b:.2f} s, instrumented {i:.2f} s -> overhead {overhead:+.1%}; ceiling 20%")
    ok = whole <= 60 and overhead <= 0.20
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
