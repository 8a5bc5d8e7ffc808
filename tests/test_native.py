"""The compiled statistics kernel: built from this source, loaded, and optional.

Its numbers are held to the float64 reference in test_stats_reference.py (every test there runs
with the kernel and with the numpy fallback); here: the build and the switch.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from initcheck.tensors import native

SOURCE = Path(native.__file__).parent.parent / "kernels.c"


def test_kernel_is_built_wherever_a_compiler_is():
    """pip install compiles it when cc is there; a silent fallback would hide a broken build."""
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler on this machine: the numpy fallback is the engine")
    assert native.available(), native.describe()


def test_library_is_built_from_this_kernels_c():
    """An editable install compiles once; after an edit of kernels.c, `pip install -e .` again."""
    if not native.available():
        pytest.skip(native.describe())
    assert native.source_sha256() == hashlib.sha256(SOURCE.read_bytes()).hexdigest(), \
        "initcheck/_kernels.so is stale: run `pip install -e .` to rebuild it"


def _config_line(env) -> str:
    out = subprocess.run([sys.executable, "-m", "initcheck", "config"], capture_output=True, text=True, env=env, check=True)
    return next(line for line in out.stdout.splitlines() if line.startswith("# statistics:"))


def test_switch_off_with_an_environment_variable():
    env = {**os.environ, "INITCHECK_NATIVE": "0"}
    assert "numpy (INITCHECK_NATIVE=0" in _config_line(env)
    if native.available():
        assert "compiled kernel" in _config_line({k: v for k, v in os.environ.items() if k != "INITCHECK_NATIVE"})


def test_unknown_kind_is_refused_not_misread():
    """The C entry point rejects a kind it does not know (-1) instead of reading bytes as something else."""
    if not native.available():
        pytest.skip(native.describe())
    import ctypes

    st = native._Stats()
    x = np.ones(8, np.float32)
    assert native._fused(x.ctypes.data, 99, None, 1, 8, ctypes.byref(st), None, None, None, 0, None) == -1
    assert not native.supports(x[::2], "float32"), "strided views go to numpy"
    assert not native.supports(x.astype(np.float64), "float64")


def test_portable_build_matches_the_reference(tmp_path, monkeypatch):
    """The baseline-SSE2 code (what a CPU without AVX2, or a compiler without per-CPU clones,
    runs) is held to the float64 reference too, on every dtype the kernel decodes."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    lib = tmp_path / "portable.so"
    subprocess.run([cc, "-O3", "-fPIC", "-shared", "-std=c99", "-DIC_NO_CLONES", "-o", str(lib), str(SOURCE), "-lm"],
                   check=True, capture_output=True)
    loaded = native._load(lib)
    if loaded is None:
        pytest.skip("INITCHECK_NATIVE=0")
    fused, buckets = loaded
    monkeypatch.setattr(native, "_fused", fused)
    monkeypatch.setattr(native, "_buckets", buckets)
    from safetensors.torch import save_file
    from test_stats_reference import COSINE, _same, _tensors, reference_compute

    from initcheck import tensors as T
    from initcheck.tensors import stats as S
    from initcheck.loader import open_checkpoint

    for dtype in ("float32", "float16", "bfloat16", "float8_e4m3fn"):
        path = tmp_path / f"{dtype}.safetensors"
        save_file(_tensors(dtype, seed=1), str(path))
        ck = open_checkpoint(path)
        for e in ck.entries:
            rec = T.make_record(e.name, e.shape, e.dtype, e.file)
            raw = ck.array(e)
            opts = {"near_duplicate_cosine": COSINE}
            _same(S.compute(rec, raw, opts), reference_compute(rec, raw, opts), f"{dtype} {e.name}")
