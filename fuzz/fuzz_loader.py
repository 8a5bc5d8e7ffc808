"""Coverage-guided fuzzing of the checkpoint loader with atheris (not run in CI).

    pip install atheris
    python fuzz/fuzz_loader.py -max_total_time=600 -rss_limit_mb=2048 [corpus_dir]

Each input is split into a safetensors file, a config.json and a shard index (by the first
bytes), written into a scratch folder and opened with ``initcheck.loader.open_checkpoint``.
Contract: it returns a checkpoint whose tensors can all be read, or raises InputError with a
one-line message; any other exception, a hang or a large allocation is a bug.
"""

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from initcheck.errors import InputError
    from initcheck.loader import open_checkpoint

SCRATCH = tempfile.mkdtemp(prefix="initcheck-fuzz-")
SAFE = ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"]


def _write(name: str, data: bytes | None):
    path = os.path.join(SCRATCH, name)
    if data is None:
        if os.path.exists(path):
            os.unlink(path)
    else:
        with open(path, "wb") as f:
            f.write(data)


def test_one_input(raw: bytes):
    fdp = atheris.FuzzedDataProvider(raw)
    layout = fdp.ConsumeIntInRange(0, 3)
    config = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)) if layout & 1 else None
    index = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)) if layout & 2 else None
    weights = fdp.ConsumeBytes(fdp.remaining_bytes())
    _write("config.json", config)
    _write("model.safetensors.index.json", index)
    _write("model.safetensors" if index is None else "model-00001-of-00001.safetensors", weights)
    _write("model-00001-of-00001.safetensors" if index is None else "model.safetensors", None)
    try:
        ckpt = open_checkpoint(SCRATCH, safe_globals=SAFE)
        for _entry, arr in ckpt.arrays():
            arr.sum()
        ckpt.close()
    except InputError as e:
        assert "\n" not in str(e), str(e)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
