"""Benchmark: the default probe on a BERT-base-size text classifier (BertConfig() defaults, ~110M
params) and a ViT-base-size image classifier (ViTConfig() defaults, 224x224, ~86M params).

Measures, in one run and side by side:
  1. the whole `initcheck` run (scan + task-model load + 20-step probe), against a 60 s floor;
  2. the instrumentation overhead: the same 20 AdamW steps on the same batch with the probe's
     Recorder + activation watch vs the bare loop, against a 20% ceiling.

Run: python benchmarks/bench_probe.py [--model bert|vit|both] [--steps 20] [--keep DIR]
Not a timed test: machines differ; it prints the figures and exits 1 if a floor is missed.
"""

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch


def build(kind: str, folder: Path):
    """The model, saved as a fine-tune's starting point (architectures names the task class)."""
    torch.manual_seed(0)
    if kind == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        model = ViTForImageClassification(ViTConfig(num_labels=10))
    else:
        from transformers import BertConfig, BertForSequenceClassification

        model = BertForSequenceClassification(BertConfig(num_labels=3))
    model.save_pretrained(folder)
    return model


def probe_batch(kind: str, model, rows: int):
    from initcheck.probe import batches, inputs

    if kind == "vit":
        return inputs.synthetic(model, "image-classification", rows, 32, seed=0)
    return batches.synthetic(model, "sequence-classification", rows, 32, seed=0)


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


def bench(kind: str, steps: int, keep) -> bool:
    import initcheck

    tmp = tempfile.TemporaryDirectory()
    folder = Path(keep or tmp.name) / f"{kind}-base-cls"
    model = build(kind, folder)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {type(model).__name__}, {n / 1e6:.1f}M parameters; torch threads {torch.get_num_threads()}")

    start = time.perf_counter()
    report = initcheck.check(folder, probe=True, probe_steps=steps)
    whole = time.perf_counter() - start
    probe = report.scan.probe
    print(f"whole initcheck run: {whole:.1f} s (probe {probe['seconds']:.1f} s, {probe['status']}, batch {probe['batch_size']}, "
          f"loss {probe['loss'][0]:.3f} -> {probe['loss'][-1]:.3f}, ln(C) {probe['expected_initial_loss']:.3f}); floor 60 s")

    batch = probe_batch(kind, model, probe["batch_size"])
    model.eval()
    # alternate bare/instrumented so that machine noise hits both alike
    bare, inst = [], []
    for _ in range(2):
        bare.append(timed_loop(model, batch, steps, False))
        inst.append(timed_loop(model, batch, steps, True))
    b, i = min(bare), min(inst)
    overhead = (i - b) / b
    print(f"{steps} steps: bare {b:.2f} s, instrumented {i:.2f} s -> overhead {overhead:+.1%}; ceiling 20%")
    return whole <= 60 and overhead <= 0.20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("bert", "vit", "both"), default="both")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--keep", help="write the models here instead of a temp dir")
    args = ap.parse_args()
    kinds = ("bert", "vit") if args.model == "both" else (args.model,)
    ok = all([bench(kind, args.steps, args.keep) for kind in kinds])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
