"""Scan speed against the floor: how close does ``initcheck --no-probe`` get to reading the bytes?

Generates two synthetic Llama-like sharded bf16 checkpoints (real Llama parameter names, a
32000 x 2048 embedding and lm_head, config.json, model.safetensors.index.json), written shard by
shard so that generating them needs little memory, then measures in one run:

1. the floor: one pass that touches every byte (each file read sequentially into a reused
   buffer: the ratio's floor; and a sum over a uint64 view of the mmap, printed beside it);
2. ``python -m initcheck DIR --no-probe --format json`` as a whole process (imports included,
   bytecode cached as after ``pip install``): the static scan with the compiled kernel, the same
   with the numpy fallback (``INITCHECK_NATIVE=0``), and with ``--task causal-lm``, which also
   builds the task model with transformers to read its load report and compare every loaded
   tensor with the disk (the re-initialisation check);
3. the peak anonymous memory (RssAnon, sampled from /proc/PID/status; mmap'd file pages are
   file-backed and do not count) of that process, at both checkpoint sizes;
4. the whole-process check of the real 90 MB all-MiniLM-L6-v2 BERT, when installed.

Every timing is the best of ``--repeat`` runs with a warm page cache (each pass runs once
untimed first), so the floor and initcheck see the same cache state. The ratio is the median of
``--repeat`` ratios, each from a floor read and an initcheck run taken back to back: on a shared
machine the floor alone swings by 2x between minutes, and a pair does not see that drift.

Usage:
    python benchmarks/bench_scan.py [--workdir /tmp/initcheck-bench] [--layers 22,5] [--keep]
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
from pathlib import Path

import numpy as np

HIDDEN, INTER, VOCAB, HEADS, KV_HEADS = 2048, 5632, 32000, 32, 4   # TinyLlama-1.1B shapes
SHARD_BYTES = 500 * 1024 * 1024


def llama_tensors(layers: int):
    """(name, shape) in the order transformers saves a LlamaForCausalLM."""
    kv = HIDDEN // HEADS * KV_HEADS
    yield "model.embed_tokens.weight", (VOCAB, HIDDEN)
    for i in range(layers):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)
        yield p + "self_attn.k_proj.weight", (kv, HIDDEN)
        yield p + "self_attn.v_proj.weight", (kv, HIDDEN)
        yield p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)
        yield p + "mlp.gate_proj.weight", (INTER, HIDDEN)
        yield p + "mlp.up_proj.weight", (INTER, HIDDEN)
        yield p + "mlp.down_proj.weight", (HIDDEN, INTER)
        yield p + "input_layernorm.weight", (HIDDEN,)
        yield p + "post_attention_layernorm.weight", (HIDDEN,)
    yield "model.norm.weight", (HIDDEN,)
    yield "lm_head.weight", (VOCAB, HIDDEN)


def _bf16_chunks(name: str, shape, rng):
    """Random bf16 bit patterns (float32 -> top 16 bits), 16M elements at a time."""
    n = int(np.prod(shape))
    gain = len(shape) == 1
    for s in range(0, n, 1 << 24):
        k = min(1 << 24, n - s)
        x = rng.standard_normal(k, dtype=np.float32)
        x = (1.0 + 0.05 * x) if gain else 0.02 * x
        yield (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def write_checkpoint(folder: Path, layers: int, seed: int = 0) -> int:
    """Write a sharded bf16 Llama-like checkpoint; returns its size in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = list(llama_tensors(layers))
    shards, cur, size = [], [], 0
    for name, shape in specs:
        nbytes = int(np.prod(shape)) * 2
        if cur and size + nbytes > SHARD_BYTES:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape))
        size += nbytes
    shards.append(cur)
    rng = np.random.default_rng(seed)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in shard:
            n = int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fname
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(folder / fname, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for name, shape in shard:
                for chunk in _bf16_chunks(name, shape, rng):
                    f.write(chunk.tobytes())
        total += (folder / fname).stat().st_size
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": layers, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "initializer_range": 0.02,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "max_position_embeddings": 2048}, indent=1))
    return total


def _files(folder: Path):
    return sorted(folder.glob("*.safetensors"))


def floor_read(folder: Path) -> float:
    """Read every file sequentially into one reused 16 MB buffer."""
    buf = bytearray(16 << 20)
    view = memoryview(buf)
    t = time.perf_counter()
    for p in _files(folder):
        with open(p, "rb", buffering=0) as f:
            while f.readinto(view):
                pass
    return time.perf_counter() - t


def floor_mmap_sum(folder: Path) -> float:
    """Sum a uint64 view of each file's mmap, 16 MB at a time (faults in every page, reads every byte)."""
    t = time.perf_counter()
    for p in _files(folder):
        with open(p, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        a = np.frombuffer(mm, dtype=np.uint64, count=len(mm) // 8)
        for s in range(0, a.size, 1 << 21):
            a[s:s + (1 << 21)].sum()
        del a
        mm.close()
    return time.perf_counter() - t


def _rss_anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def child_env(engine: str = "native") -> dict:
    """The environment of a normal install: bytecode cached (pip compiles it at install time;
    PYTHONDONTWRITEBYTECODE would recompile every module on every start), and the statistics
    engine asked for ("numpy" switches the compiled kernel off)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "INITCHECK_NATIVE")}
    if engine == "numpy":
        env["INITCHECK_NATIVE"] = "0"
    return env


def run_initcheck(folder: Path, sample_memory: bool = False, extra=(), engine: str = "native"):
    """Run the CLI as a whole process; returns (wall s, CPU s, exit code, peak RssAnon bytes or None)."""
    cmd = [sys.executable, "-m", "initcheck", str(folder), "--no-probe", "--format", "json", *extra]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env(engine))
    peak = 0
    if sample_memory:
        while p.poll() is None:
            peak = max(peak, _rss_anon(p.pid))
            time.sleep(0.002)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0) if p.returncode is None else (0, 0, None)
    dt = time.perf_counter() - t
    code = p.returncode if p.returncode is not None else os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"initcheck failed on {folder} (exit {code}): {err.decode()[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime if usage is not None else float("nan")
    return dt, cpu, code, (peak if sample_memory else None)


def timed(fn):
    """(wall, CPU) seconds of an in-process pass."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def write_tiny(folder: Path):
    """One 64 x 64 bf16 tensor: the whole-process cost of starting up."""
    folder.mkdir(parents=True, exist_ok=True)
    h = json.dumps({"w.weight": {"dtype": "BF16", "shape": [64, 64], "data_offsets": [0, 8192]}}).encode()
    h += b" " * (-len(h) % 8)
    data = next(_bf16_chunks("w.weight", (64, 64), np.random.default_rng(0))).tobytes()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + data)


def best(fn, repeat: int):
    """Best (wall, CPU) of ``repeat`` runs, after one untimed run that warms the page cache."""
    fn()
    runs = [fn() for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def paired(floor, fn, repeat: int):
    """``repeat`` pairs of (floor, run) taken back to back: (median of the run / floor ratios,
    best run (wall, CPU)). Memory bandwidth on a shared machine drifts between seconds; a ratio
    taken within one pair does not see the drift, a ratio of two best-ofs would."""
    fn()
    ratios, runs = [], []
    for _ in range(repeat):
        f = floor()[0]
        runs.append(fn())
        ratios.append(runs[-1][0] / f)
    return statistics.median(ratios), (min(r[0] for r in runs), min(r[1] for r in runs))


def native_built() -> bool:
    """Whether this install compiled initcheck/kernels.c (else every row is the numpy fallback)."""
    out = subprocess.run([sys.executable, "-c", "from initcheck.tensors import native; print(native.available())"],
                         capture_output=True, text=True, env=child_env())
    return out.stdout.strip() == "True"


def minilm_dir():
    """The real all-MiniLM-L6-v2 from the test extras (shared with the tests' fixtures)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import minilm_dir as find

    return find()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/initcheck-bench")
    ap.add_argument("--layers", default="22,5", help="decoder layers of the large and small checkpoint")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = ap.parse_args()

    work = Path(args.workdir)
    rows = []
    try:
        tiny = work / "tiny"
        write_tiny(tiny)
        startup = best(lambda: run_initcheck(tiny)[:2], args.repeat)
        for layers in map(int, args.layers.split(",")):
            folder = work / f"llama-{layers}L"
            if not (folder / "config.json").is_file():
                t = time.perf_counter()
                size = write_checkpoint(folder, layers)
                print(f"generated {folder} ({size / 1e9:.2f} GB) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            size = sum(p.stat().st_size for p in _files(folder))
            f_read = best(lambda: timed(lambda: floor_read(folder)), args.repeat)
            f_mmap = best(lambda: timed(lambda: floor_mmap_sum(folder)), args.repeat)
            # static scan (compiled kernel, then the numpy fallback), then the same plus the task
            # model's load report and re-init check
            runs = [(folder.name, (), "native"), (folder.name + " numpy", (), "numpy"),
                    (folder.name + " +load", ("--task", "causal-lm"), "native")]
            for label, extra, engine in runs:
                if engine == "native" and not native_built():
                    label, engine = label + " numpy", "numpy"
                ratio, ic = paired(lambda: timed(lambda: floor_read(folder)),
                                   lambda: run_initcheck(folder, extra=extra, engine=engine)[:2], args.repeat)
                _, _, code, peak = run_initcheck(folder, sample_memory=True, extra=extra, engine=engine)
                rows.append({"checkpoint": label, "GB": size / 1e9, "floor_read_s": f_read[0],
                             "floor_mmap_s": f_mmap[0], "initcheck_s": ic[0], "initcheck_cpu_s": ic[1],
                             "ratio_read": ratio, "ratio_mmap": ic[0] / f_mmap[0],
                             "scan_ratio_read": (ic[0] - startup[0]) / f_read[0],
                             "MB/s": size / 1e6 / ic[0], "peak_RssAnon_MB": peak / 2**20, "exit": code})
        mini = minilm_dir()
        mini_s = best(lambda: run_initcheck(mini)[:2], args.repeat) if mini else None
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{'checkpoint':<18} {'GB':>5} {'floor read s':>12} {'floor mmap s':>12} {'initcheck s':>11} "
          f"{'(CPU s)':>8} {'ratio':>6} {'vs mmap':>7} {'scan only':>9} {'MB/s':>6} {'peak RssAnon':>12}")
    for r in rows:
        print(f"{r['checkpoint']:<18} {r['GB']:>5.2f} {r['floor_read_s']:>12.3f} {r['floor_mmap_s']:>12.3f} "
              f"{r['initcheck_s']:>11.3f} {r['initcheck_cpu_s']:>8.2f} {r['ratio_read']:>6.2f} "
              f"{r['ratio_mmap']:>7.2f} {r['scan_ratio_read']:>9.2f} {r['MB/s']:>6.0f} {r['peak_RssAnon_MB']:>9.0f} MB")
    print(f"startup (whole process on a one-tensor checkpoint): {startup[0]:.2f} s wall, {startup[1]:.2f} s CPU")
    if mini_s is not None:
        print(f"all-MiniLM-L6-v2 (90 MB), whole process: {mini_s[0]:.2f} s wall, {mini_s[1]:.2f} s CPU")
    print("ratio = median over back-to-back pairs of initcheck / floor read (whole process, imports included);"
          " vs mmap = best initcheck / best floor mmap-sum; scan only = (initcheck - startup) / floor read")
    print(f"cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"best of {args.repeat} runs, page cache warm for all")
    print(json.dumps({"rows": rows, "startup_s": startup, "minilm_s": mini_s}), file=sys.stderr)


if __name__ == "__main__":
    main()
