"""Benchmark: ``initcheck fleet`` over 40 small checkpoints, against the sum of single runs.

Builds ``--members`` small real checkpoints (BERT, GPT-2 and Llama classifiers and LMs from
configs, 0.6-3 MB each, a quarter with a zeroed head), then measures, as whole processes:

1. every member alone, ``python -m initcheck check M --no-probe -q -o r.json``, one after another:
   the sum of single-run times (start-up included: that is what a shell loop pays);
2. ``python -m initcheck fleet MEMBERS -o OUT --no-probe --jobs J --force``: the process pool.
   Its wall time must be within 1.3x of (sum of single runs) / J (exit 1 otherwise);
3. the same with ``--ray`` (a local cluster of J CPUs started by the command): Ray's overhead per
   member against the pool, with the cluster's start-up given apart;
4. with the probe (the default), on the first ``--probe-members``: singles and the pool again.

Throughput is printed as checkpoints/minute and MB/minute of weight files. Not a timed test:
machines differ. Run: python benchmarks/bench_fleet.py [--members 40] [--jobs N] [--no-ray] [--keep DIR]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(folder: Path, n: int) -> list:
    """``n`` small checkpoints of three families; every fourth has a zeroed head (a failing member)."""
    import torch
    import transformers
    from safetensors.torch import load_file, save_file

    out = []
    for i in range(n):
        family = ("bert", "gpt2", "llama")[i % 3]
        layers, width = 2 + i % 3, 64 + 32 * (i % 2)
        if family == "bert":
            cfg = transformers.BertConfig(vocab_size=1000, hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                                          intermediate_size=2 * width, max_position_embeddings=128, num_labels=3)
            cls, head = transformers.BertForSequenceClassification, "classifier.weight"
        elif family == "gpt2":
            cfg = transformers.GPT2Config(vocab_size=1000, n_embd=width, n_layer=layers, n_head=4, n_positions=128,
                                          num_labels=3, pad_token_id=0)
            cls, head = transformers.GPT2ForSequenceClassification, "score.weight"
        else:
            cfg = transformers.LlamaConfig(vocab_size=1000, hidden_size=width, intermediate_size=2 * width,
                                           num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                           max_position_embeddings=128, num_labels=3, pad_token_id=0)
            cls, head = transformers.LlamaForSequenceClassification, "score.weight"
        torch.manual_seed(i)
        path = folder / f"{i:02d}-{family}"
        cls(cfg).save_pretrained(path)
        if i % 4 == 3:
            sd = load_file(path / "model.safetensors")
            sd[head].zero_()
            save_file(sd, path / "model.safetensors", metadata={"format": "pt"})
        out.append(path)
    return out


CPU = {"seconds": 0.0}   # user+sys of every finished descendant (the pool's children included), summed by phase


def timed(cmd: list) -> tuple:
    t, before = time.monotonic(), _cpu()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    CPU["seconds"] += _cpu() - before
    return time.monotonic() - t, r


def _cpu() -> float:
    import resource

    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def cpu_since(mark: float) -> float:
    return CPU["seconds"] - mark


def singles(members: list, opts: list, tmp: Path) -> list:
    times = []
    for m in members:
        took, r = timed([sys.executable, "-m", "initcheck", "check", str(m), *opts, "-q", "-o", str(tmp / "r.json")])
        assert r.returncode in (0, 1), r.stderr
        times.append(took)
    return times


def fleet(members: list, out: Path, opts: list) -> tuple:
    took, r = timed([sys.executable, "-m", "initcheck", "fleet", *map(str, members), "-o", str(out), "--force", *opts])
    assert r.returncode in (0, 1), r.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "fleet.jsonl").read_text().splitlines()]
    start = re.search(r"Ray start-up ([\d.]+) s", r.stderr)
    return took, rows, float(start.group(1)) if start else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=40)
    ap.add_argument("--probe-members", type=int, default=6)
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--keep", default=None)
    a = ap.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="bench-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        members = build(work / "members", a.members)
        mb = sum((m / "model.safetensors").stat().st_size for m in members) / 1e6
        print(f"{len(members)} members, {mb:.1f} MB of weights, jobs {a.jobs}, load average {os.getloadavg()[0]:.1f}")
        singles(members[:2], ["--no-probe"], work)   # warm the page cache and bytecode
        static = ["--no-probe"]
        mark, load = CPU["seconds"], os.getloadavg()[0]
        one = singles(members, static, work)
        one_cpu, mark = cpu_since(mark), CPU["seconds"]
        ideal = sum(one) / a.jobs
        pool, rows, _ = fleet(members, work / "out-pool", static + ["--jobs", str(a.jobs)])
        pool_cpu = cpu_since(mark)
        ratio = pool / ideal
        results = [("static, single runs in a row", len(members), sum(one), mb),
                   (f"static, process pool --jobs {a.jobs}", len(members), pool, mb)]
        print(f"static: sum of single runs {sum(one):.2f} s (median {sorted(one)[len(one) // 2]:.3f} s per member), "
              f"/ {a.jobs} jobs = {ideal:.2f} s; pool {pool:.2f} s; ratio {ratio:.2f} (limit 1.3)")
        print(f"  per-member check time inside the pool: median {sorted(r['seconds'] for r in rows)[len(rows) // 2]:.3f} s")
        print(f"  CPU (user+sys): single runs {one_cpu:.2f} s, pool {pool_cpu:.2f} s ({pool_cpu / one_cpu:.2f}x: the "
              f"pool's own cost); load average {load:.1f} before, {os.getloadavg()[0]:.1f} after (on a machine whose "
              f"other load takes the cores, wall times stretch by that load, not by the pool)")
        if not a.no_ray:
            ray_wall, ray_rows, start = fleet(members, work / "out-ray", static + ["--ray", "--jobs", str(a.jobs)])
            per = (ray_wall - start - pool) / len(members)
            results.append((f"static, --ray (local cluster, {a.jobs} CPUs)", len(members), ray_wall, mb))
            print(f"ray: {ray_wall:.2f} s, of which cluster start-up {start:.2f} s; overhead against the pool "
                  f"{per * 1000:+.0f} ms per member ({(ray_wall - start) / pool:.2f}x the pool without start-up)")
            assert [r["verdict"] for r in ray_rows] == [r["verdict"] for r in rows]
        if a.probe_members:
            sub = members[:a.probe_members]
            pmb = sum((m / "model.safetensors").stat().st_size for m in sub) / 1e6
            p_one = singles(sub, [], work)
            p_pool, _, _ = fleet(sub, work / "out-probe", ["--jobs", str(a.jobs)])
            results += [("probe, single runs in a row", len(sub), sum(p_one), pmb),
                        (f"probe, process pool --jobs {a.jobs}", len(sub), p_pool, pmb)]
            print(f"probe: sum of single runs {sum(p_one):.2f} s, / {a.jobs} = {sum(p_one) / a.jobs:.2f} s; "
                  f"pool {p_pool:.2f} s; ratio {p_pool / (sum(p_one) / a.jobs):.2f}")
        print("\n| run | members | wall | checkpoints/min | MB/min |\n|---|---|---|---|---|")
        for name, n, wall, size in results:
            print(f"| {name} | {n} | {wall:.1f} s | {n / wall * 60:.0f} | {size / wall * 60:.0f} |")
        return 0 if ratio <= 1.3 else 1
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
