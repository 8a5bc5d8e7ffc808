"""The scan's progress bar: tensors and bytes on a terminal, nothing at all otherwise."""

import json
import os
import pty
import subprocess
import sys
import threading

import numpy as np
import pytest
from safetensors.numpy import save_file


@pytest.fixture
def small_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "m.safetensors"
    save_file({f"layers.{i}.mlp.up_proj.weight": rng.standard_normal((64, 32)).astype(np.float32) * 0.02
               for i in range(3)}, str(path))
    return path


def _run(args, stderr_tty: bool):
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    if not stderr_tty:
        p = subprocess.run([sys.executable, "-m", "initcheck", *args], capture_output=True, timeout=120, env=env)
        return p.returncode, p.stdout, p.stderr
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "initcheck", *args], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    # drain stdout meanwhile: a JSON report larger than the pipe buffer would block the process
    # while this thread waits for the terminal to close
    box = {}
    reader = threading.Thread(target=lambda: box.setdefault("out", p.stdout.read()), daemon=True)
    reader.start()
    err = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    reader.join(timeout=120)
    p.wait(timeout=120)
    os.close(master)
    return p.returncode, box.get("out", b""), err


def test_progress_on_a_terminal_shows_tensors_and_bytes(small_file):
    code, out, err = _run([small_file, "--no-probe", "--format", "json"], stderr_tty=True)
    assert code in (0, 1)
    assert b"3/3 tensors" in err and b"kB" in err, err[-500:]
    assert json.loads(out)["schema"] == "initcheck/1"          # the bar never reaches stdout


def test_no_progress_when_not_a_terminal(small_file):
    code, out, err = _run([small_file, "--no-probe", "--format", "json"], stderr_tty=False)
    assert code in (0, 1)
    assert b"tensors" not in err and b"\x1b[" not in err and b"\x1b[" not in out
