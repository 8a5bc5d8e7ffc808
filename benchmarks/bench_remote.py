"""Reading a checkpoint from object storage: initcheck's range stream against the filesystem's own ``cat``.

Starts a real S3-compatible server (moto's server mode) on 127.0.0.1, uploads the TinyLlama-shaped
bf16 checkpoint of ``bench_scan.py`` (its writer; ``--layers 2``: 0.5 GB in two shards), then
measures in back-to-back rounds, so that a shared machine's drift hits every reader alike:

1. ``cat``: every object read whole with ``fs.cat_file`` (one GET each, one after another), in this
   process: the store's throughput as the filesystem itself reads it;
2. ``stream``: initcheck's reader alone, in this process: the objects mirrored (headers by range)
   and every tensor read in file order through ``RemoteSafetensors`` (ranged reads of
   ``remote_read_bytes``, ``remote_prefetch_bytes`` in flight);
3. ``check``: ``initcheck s3://bucket/llama/ --no-probe --format json`` as a whole process (start-up,
   listing, headers, streaming, the statistics of every tensor), with its peak anonymous memory
   (bounded by the tensors in flight plus ``remote_prefetch_bytes``, not by the checkpoint).

The issue's target (28): reading through initcheck takes at most 1.5x the time of ``cat`` (a ratio
of 1.5 or better); the median round is reported for ``stream`` and ``check``.

Usage:
    python benchmarks/bench_remote.py [--workdir /tmp/initcheck-bench-remote] [--layers 2] [--repeat 3] [--keep]
"""

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scan import run_initcheck, write_checkpoint

TARGET = 1.5   # the issue's: initcheck's read at most 1.5x the filesystem's own cat


def start_server():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    return server


def time_cat(fs, keys) -> float:
    t = time.perf_counter()
    for key in keys:
        fs.cat_file(key)
    return time.perf_counter() - t


def time_stream(url: str) -> tuple:
    """initcheck's reader alone: (seconds, bytes fetched)."""
    from initcheck.loader import open_checkpoint
    from initcheck.loader.limits import default_limits
    from initcheck.loader.remote import Options, stage

    t = time.perf_counter()
    mirror = stage(url, default_limits(), Options.from_scan({}))
    try:
        ckpt = open_checkpoint(mirror.target)
        for _entry, _arr in ckpt.arrays():
            pass
        ckpt.close()
        return time.perf_counter() - t, mirror.fetched
    finally:
        mirror.close()


def time_check(url: str) -> tuple:
    """The whole CLI as a process: (wall seconds, peak RssAnon bytes); the AWS_* variables reach it."""
    wall, _cpu, _code, peak = run_initcheck(url, sample_memory=True)
    return wall, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/initcheck-bench-remote")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir)
    folder = work / "llama"
    if not folder.exists():
        write_checkpoint(folder, args.layers)
    server = start_server()
    try:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("bench")
        for p in sorted(folder.iterdir()):
            fs.put_file(str(p), f"bench/llama/{p.name}")
        keys = sorted(fs.find("bench/llama"))
        total = sum(fs.info(k)["size"] for k in keys)
        url = "s3://bench/llama/"
        time_cat(fs, keys)   # one untimed round: the server's first reads
        rounds = []
        for _ in range(args.repeat):
            cat = time_cat(fs, keys)
            stream, fetched = time_stream(url)
            check, peak = time_check(url)
            rounds.append({"cat_s": cat, "stream_s": stream, "check_s": check, "fetched": fetched, "check_peak_mb": peak / 2**20,
                           "stream_ratio": stream / cat, "check_ratio": check / cat})
        med = {k: statistics.median(r[k] for r in rounds)
               for k in ("cat_s", "stream_s", "check_s", "stream_ratio", "check_ratio", "check_peak_mb")}
        mb = total / 1e6
        print(json.dumps({"bytes": total, "objects": len(keys), "rounds": rounds, "median": med}, indent=1))
        print(f"{mb:.0f} MB in {len(keys)} objects, moto server on 127.0.0.1, median of {args.repeat} rounds:")
        print(f"  fs.cat_file         {med['cat_s']:.2f} s  {mb / med['cat_s']:.0f} MB/s")
        print(f"  initcheck stream    {med['stream_s']:.2f} s  {mb / med['stream_s']:.0f} MB/s  ratio {med['stream_ratio']:.2f}")
        print(f"  initcheck s3:// (whole check, --no-probe)  {med['check_s']:.2f} s  {mb / med['check_s']:.0f} MB/s  "
              f"ratio {med['check_ratio']:.2f}, peak RssAnon {med['check_peak_mb']:.0f} MiB")
        ok = med["stream_ratio"] <= TARGET and med["check_ratio"] <= TARGET
        print(f"target: ratio <= {TARGET}: {'met' if ok else 'NOT met'}")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
