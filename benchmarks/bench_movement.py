"""Movement scan speed against the floor: how close does measuring every tensor's movement between two
checkpoints get to reading both files once?

Writes a training run folder with two synthetic TinyLlama-shaped bf16 checkpoints (``checkpoint-1/``,
``checkpoint-2/``; ``bench_scan.py``'s writer, two seeds, so every tensor moved), then measures in one run:

1. the floor: both checkpoints' files read sequentially into a reused buffer (``bench_scan.floor_read``);
2. the movement scan in-process: ``initcheck.run.movement.movement`` over every tensor pair (both
   files mmap'd, decoded, subtracted and folded in cache-sized chunks on two threads);
3. the whole post-mortem as a process, ``python -m initcheck RUN --no-probe --format json``:
   the static scan of the latest checkpoint plus the movement scan, imports included, with its peak
   anonymous memory (RssAnon).

Warm page cache; the ratio is the median of ``--repeat`` ratios, each from a floor read and a run taken
back to back (``bench_scan.paired``), as for the static scan.

Usage:
    python benchmarks/bench_movement.py [--workdir /tmp/initcheck-bench-move] [--layers 15] [--keep]
"""

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scan import (
    floor_read,
    native_built,
    paired,
    run_initcheck,
    timed,
    write_checkpoint,
)


def movement_scan(a: Path, b: Path):
    """The movement scan alone, as the post-mortem runs it: open both, compare every shared tensor."""
    from initcheck.loader import open_checkpoint
    from initcheck.run.movement import comparable, movement

    before, after = open_checkpoint(a), open_checkpoint(b)
    out = movement(before, after, comparable(before, after))
    before.close()
    after.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/initcheck-bench-move")
    ap.add_argument("--layers", type=int, default=15, help="decoder layers of each checkpoint (15: 1.58 GB each)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = ap.parse_args()
    run = Path(args.workdir) / "run"
    a, b = run / "checkpoint-1", run / "checkpoint-2"
    sizes = []
    for folder, seed in ((a, 0), (b, 1)):
        if not (folder / "config.json").is_file():
            print(f"writing {folder} ({args.layers} layers) ...", flush=True)
            write_checkpoint(folder, args.layers, seed=seed)
        sizes.append(sum(p.stat().st_size for p in folder.glob("*.safetensors")))
    gb = sum(sizes) / 1e9
    print(f"checkpoints: {sizes[0] / 1e9:.2f} GB + {sizes[1] / 1e9:.2f} GB; engine: "
          f"{'compiled kernel' if native_built() else 'numpy fallback'}")

    def floor():
        return floor_read(a) + floor_read(b), 0.0

    f_best = min(floor()[0] for _ in range(args.repeat + 1))
    moved = movement_scan(a, b)
    assert all(m["changed"] > 0 for m in moved.values()), "every tensor differs between the two seeds"
    ratio, (wall, cpu) = paired(floor, lambda: timed(lambda: movement_scan(a, b)), args.repeat)
    print(f"floor (read both): {f_best:.3f} s ({gb / f_best:.0f} GB/s)")
    print(f"movement scan:     {wall:.3f} s wall, {cpu:.3f} s CPU, ratio {ratio:.2f} (median of {args.repeat} pairs), "
          f"{gb / wall:.1f} GB/s, {len(moved)} tensors")
    whole_ratio, (w_wall, _) = paired(floor, lambda: run_initcheck(run)[:2], args.repeat)
    _, _, code, peak = run_initcheck(run, sample_memory=True)
    print(f"whole post-mortem: {w_wall:.3f} s (ratio {whole_ratio:.2f}; static scan of the latest + movement), "
          f"exit {code}, peak RssAnon {peak / 2**20:.0f} MB")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
