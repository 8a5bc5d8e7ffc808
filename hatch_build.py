"""Build hook: compile initcheck/kernels.c into initcheck/_kernels.so when a C compiler is there.

The library is plain C loaded through ctypes (no Python headers, no Python ABI), so the wheel is
tagged ``py3-none-<platform>``. Without a compiler the wheel stays pure Python and initcheck
scans with numpy instead, a few times slower (the build says so; nothing fails). ``CC`` picks
the compiler; ``INITCHECK_NATIVE=0`` at build time skips it.
"""

import hashlib
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = "initcheck/kernels.c"
TARGET = "initcheck/_kernels.so"
# -ffp-contract=fast: fused multiply-adds for the sums of squares (ISO C modes turn them off)
FLAGS = ["-O3", "-fPIC", "-shared", "-std=c99", "-fno-math-errno", "-ffp-contract=fast"]


class KernelBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        if self.target_name != "wheel" or os.environ.get("INITCHECK_NATIVE") == "0":
            return
        root = Path(self.root)
        if version == "editable":      # an editable install imports from the source tree: build in place
            out = root / TARGET
        else:
            self._tmp = tempfile.mkdtemp(prefix="initcheck-build-")
            out = Path(self._tmp) / "_kernels.so"
        error = _compile(root / SOURCE, out)
        if error:
            self.app.display_warning(f"initcheck: not compiling {SOURCE} ({error}); the scan will use numpy, "
                                     "a few times slower")
            return
        if version != "editable":
            build_data["force_include"][str(out)] = TARGET
        build_data["pure_python"] = False
        build_data["tag"] = _tag()

    def finalize(self, version, build_data, artifact_path):
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)


def _compile(src: Path, out: Path) -> str | None:
    """Compile ``src`` to the shared library ``out``; returns why it could not, or None."""
    # $CC, else the compiler Python was built with, else cc: the first that exists here
    choices = [os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"]
    cc = next((shlex.split(c) for c in choices if c and shlex.split(c) and shutil.which(shlex.split(c)[0])), None)
    if cc is None:
        return "no C compiler found"
    tmp = out.with_suffix(".tmp.so")
    stamp = f'-DIC_SOURCE_SHA256="{hashlib.sha256(src.read_bytes()).hexdigest()}"'
    # a compiler without per-CPU clones (older GCC, other platforms) still builds the portable code
    for extra in ([], ["-DIC_NO_CLONES"]):
        try:
            done = subprocess.run([*cc, *FLAGS, *extra, stamp, "-o", str(tmp), str(src), "-lm"],
                                  capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{cc[0]} failed: {e}"
        if done.returncode == 0:
            os.replace(tmp, out)   # never leave a half-written library where the loader looks
            return None
    tmp.unlink(missing_ok=True)
    return f"{cc[0]} failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]


def _tag() -> str:
    from packaging.tags import platform_tags

    return f"py3-none-{next(platform_tags())}"
