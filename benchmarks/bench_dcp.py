"""DCP against safetensors: does a ``torch.distributed.checkpoint`` folder scan as fast, in as little memory?

Writes the TinyLlama-shaped bf16 checkpoint of ``bench_scan.py`` (2.2 GB, its own writer, imported),
then the same tensors as DCP checkpoints written by ``torch.distributed.checkpoint.save`` itself:

- ``dcp-1``: one process (``no_dist=True``): every tensor one chunk, one ``__0_0.distcp``;
- ``dcp-2`` (``--ranks 2``, the default): two gloo ranks on localhost, every tensor a DTensor split
  by rows over the ranks (FSDP2's layout): each tensor two chunks in two files, reassembled by initcheck.

The DCP copies are written from the safetensors files' mmap (torch tensors over the mapped pages), so
generating them needs no 2 GB of memory: the writer's peak is DCP's own per-tensor staging.

Then ``python -m initcheck DIR --no-probe --format json`` runs as a whole process on each, ``--repeat``
times, back to back (warm page cache, one untimed run first), and the report gives the best wall time,
the DCP / safetensors ratio, the peak anonymous memory (RssAnon, sampled: mmap'd file pages do not
count) and the peak RSS (``ru_maxrss``: mapped file pages included) of each.

Usage:
    python benchmarks/bench_dcp.py [--workdir /tmp/initcheck-bench-dcp] [--layers 22] [--ranks 2] [--repeat 3] [--keep]
"""

import argparse
import json
import mmap
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scan import _rss_anon, child_env, native_built, write_checkpoint


def mapped_state(folder: Path) -> dict:
    """The safetensors checkpoint's tensors as torch tensors over the files' mmap: nothing copied."""
    import numpy as np
    import torch

    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        (n,) = struct.unpack("<Q", mm[:8])
        header = json.loads(mm[8:8 + n])
        header.pop("__metadata__", None)
        for name, spec in header.items():
            a, b = spec["data_offsets"]
            raw = np.frombuffer(mm, dtype=np.uint16, count=(b - a) // 2, offset=8 + n + a).reshape(spec["shape"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # a read-only buffer: DCP only reads it
                state[name] = torch.from_numpy(raw).view(torch.bfloat16)
    return state


def write_dcp(src: Path, out: Path):
    """One process, no process group: every tensor one chunk."""
    import torch.distributed.checkpoint as dcp

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", out / "config.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(mapped_state(src), checkpoint_id=str(out), no_dist=True)


_RANK = r'''
import os, sys, warnings
sys.path.insert(0, sys.argv[3])
import torch, torch.distributed as dist, torch.multiprocessing as mp
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard
from bench_dcp import mapped_state


def worker(rank, port, src, out, world):
    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    state = {}
    for name, t in mapped_state(src).items():   # every rank maps the same files: its row block, no scatter
        rows = -(-t.shape[0] // world)
        local = t[rank * rows:(rank + 1) * rows]
        state[name] = DTensor.from_local(local, mesh, [Shard(0)], run_check=False, shape=t.shape, stride=t.stride())
    dcp.save(state, checkpoint_id=out)
    dist.destroy_process_group()


if __name__ == "__main__":
    import socket
    from pathlib import Path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = int(sys.argv[4])
    mp.start_processes(worker, args=(port, Path(sys.argv[1]), sys.argv[2], world), nprocs=world, join=True, start_method="fork")
'''


def write_dcp_sharded(src: Path, out: Path, ranks: int):
    """``ranks`` gloo processes, every tensor split by rows over them (FSDP2's layout)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", out / "config.json")
    r = subprocess.run([sys.executable, "-c", _RANK, str(src), str(out), str(Path(__file__).resolve().parent), str(ranks)], check=False,
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"the {ranks}-rank DCP writer failed: {r.stderr[-2000:]}")


def run(folder: Path):
    """``initcheck DIR --no-probe`` as a process: (wall s, peak RssAnon bytes, ru_maxrss bytes)."""
    cmd = [sys.executable, "-m", "initcheck", str(folder), "--no-probe", "--format", "json"]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env())
    peak = 0
    while True:   # wait4, not poll: the child's own ru_maxrss comes with its exit status
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _rss_anon(p.pid))
        time.sleep(0.002)
    wall = time.perf_counter() - t
    p.returncode = code = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode()
    if code not in (0, 1):
        raise SystemExit(f"initcheck failed on {folder} (exit {code}): {err[-2000:]}")
    return wall, peak, usage.ru_maxrss * 1024


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/initcheck-bench-dcp")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--ranks", type=int, default=2, help="ranks of the sharded copy (0: none)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = ap.parse_args()
    work = Path(args.workdir)
    st, one, many = work / "safetensors", work / "dcp-1", work / f"dcp-{args.ranks}"
    try:
        made = {}
        if not (st / "config.json").exists():
            t = time.perf_counter()
            write_checkpoint(st, args.layers)
            made["safetensors"] = time.perf_counter() - t
        if not (one / ".metadata").exists():
            t = time.perf_counter()
            write_dcp(st, one)
            made["dcp-1"] = time.perf_counter() - t
        folders = {"safetensors": st, "dcp-1": one}
        if args.ranks > 1:
            if not (many / ".metadata").exists():
                t = time.perf_counter()
                write_dcp_sharded(st, many, args.ranks)
                made[many.name] = time.perf_counter() - t
            folders[many.name] = many
        for name, secs in made.items():
            print(f"wrote {name} in {secs:.1f} s")
        print(f"engine: {'compiled kernel' if native_built() else 'numpy fallback'}; {os.cpu_count()} cores")
        for f in folders.values():
            run(f)   # untimed: warms the page cache
        results = {name: [] for name in folders}
        for _ in range(args.repeat):   # back to back, so that machine drift hits every format alike
            for name, f in folders.items():
                results[name].append(run(f))
        print(f"{'checkpoint':<14} {'files':>5} {'GB':>6} {'best wall s':>11} {'x safetensors':>13} {'peak RssAnon MB':>15} {'peak RSS MB':>11}")
        for name, f in folders.items():
            rs = results[name]
            wall = min(r[0] for r in rs)
            # the median of the ratios of runs taken in the same round: a shared machine drifts between rounds
            ratio = statistics.median(r[0] / s[0] for r, s in zip(rs, results["safetensors"]))
            files = len([p for p in f.iterdir() if p.suffix in (".safetensors", ".distcp")])
            print(f"{name:<14} {files:>5} {size_of(f) / 1e9:>6.2f} {wall:>11.2f} {ratio:>13.2f} "
                  f"{max(r[1] for r in rs) / 2**20:>15.0f} {max(r[2] for r in rs) / 2**20:>11.0f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
