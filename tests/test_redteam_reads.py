"""Issue 22, reads outside the folder and files changed under the scan: every file is opened once,
inside the folder, and read through that descriptor; a truncated mapped file is one line, exit 2."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from safetensors.numpy import save_file

from initcheck.errors import InputError
from initcheck.loader import contained, open_checkpoint


def _weights(folder, n=4, rows=256):
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    save_file({f"layer{i}.weight": np.full((rows, 64), 0.01 * (i + 1), dtype=np.float32) for i in range(n)},
              str(folder / "model.safetensors"))
    return folder


def test_open_inside_refuses_a_symlink_out_and_reads_a_file_in(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": 1}')
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "in.json").write_text('{"ok": 1}')
    (folder / "out.json").symlink_to(outside)
    (folder / "sub").mkdir()
    (folder / "sub" / "link.json").symlink_to("../in.json")   # a link that stays inside is fine
    assert contained.read_inside(folder, "in.json", 100) == b'{"ok": 1}'
    assert contained.read_inside(folder, "sub/link.json", 100) == b'{"ok": 1}'
    with pytest.raises(InputError, match="outside the model folder"):
        contained.read_inside(folder, "out.json", 100)
    with pytest.raises(InputError, match="100 byte limit"):
        (folder / "big.json").write_text("x" * 101)
        contained.read_inside(folder, "big.json", 100)


def test_open_inside_refuses_a_fifo_without_blocking(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    os.mkfifo(folder / "tokenizer.json")   # no writer: a plain open would block forever
    with pytest.raises(InputError, match="not a regular file"):
        contained.open_inside(folder, "tokenizer.json")


def test_safetensors_header_and_data_come_from_one_descriptor(tmp_path):
    """A symlink swapped in after the header was read must not change the bytes read."""
    folder = _weights(tmp_path / "m")
    other = _weights(tmp_path / "other")   # same header, other values
    import numpy as np

    save_file({f"layer{i}.weight": np.full((256, 64), 7.0, dtype=np.float32) for i in range(4)},
              str(other / "model.safetensors"))
    ckpt = open_checkpoint(folder)
    os.replace(folder / "model.safetensors", tmp_path / "moved.safetensors")
    (folder / "model.safetensors").symlink_to(other / "model.safetensors")
    first = ckpt.array(ckpt.entries[0])
    assert float(first[0, 0]) == pytest.approx(0.01)
    ckpt.close()


def test_a_weight_file_linked_out_of_the_folder_is_refused(tmp_path):
    other = _weights(tmp_path / "other")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(other / "model.safetensors")
    with pytest.raises(InputError, match="outside the model folder"):
        open_checkpoint(folder)


def test_truncated_between_tensors_is_one_line_not_sigbus(tmp_path):
    folder = _weights(tmp_path / "m")
    ckpt = open_checkpoint(folder)
    ckpt.array(ckpt.entries[0]).sum()
    os.truncate(folder / "model.safetensors", 4096)
    with pytest.raises(InputError, match=r"model.safetensors: changed while being read: \d+ bytes when opened, 4096 now"):
        ckpt.array(ckpt.entries[-1]).sum()
    ckpt.close()


def test_truncated_during_a_tensor_read_exits_2_with_one_line(tmp_path):
    """The page read faults (SIGBUS): the CLI's guard prints one line and exits 2."""
    folder = _weights(tmp_path / "m", n=1, rows=65536)   # 16 MiB, one tensor
    code = textwrap.dedent(f"""
        import os
        from initcheck.loader.safetensors_file import SafetensorsFile, guard_sigbus
        guard_sigbus()
        f = SafetensorsFile({str(folder / 'model.safetensors')!r}, "model.safetensors")
        a = f.array(f.entries[0])
        os.truncate({str(folder / 'model.safetensors')!r}, 4096)
        print(float(a.sum()))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["initcheck: error: model.safetensors: changed or truncated while being read (SIGBUS)"]
    assert r.stdout == ""


def _llama(folder):
    import torch
    import transformers
    from conftest import llama_config

    torch.manual_seed(0)
    transformers.LlamaForCausalLM(llama_config()).save_pretrained(folder)
    return folder


def _outside(tmp_path, name, text):
    out = tmp_path / "outside"
    out.mkdir(exist_ok=True)
    (out / name).write_text(text)
    return out / name


# the CLI under a Python audit hook: every open() of a path that resolves into OUTSIDE is reported
# (transformers reads generation_config.json and tokenizer.json through Python's open)
_AUDITED = """
import os, sys
outside = os.path.realpath(sys.argv.pop(1))
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)) and os.path.realpath(os.fsdecode(args[0])).startswith(outside):
        os.write(2, ("OPENED-OUTSIDE " + os.fsdecode(args[0]) + chr(10)).encode())
sys.addaudithook(hook)
from initcheck.cli import main
sys.argv[0] = "initcheck"
main()
"""


def _cli(tmp_path, *args, timeout=120):
    return subprocess.run([sys.executable, "-c", _AUDITED, str(tmp_path / "outside"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_configs_and_tokenizer_linked_out_are_never_opened(tmp_path):
    """transformers opened generation_config.json when it built the task model, and tokenizer.json
    with --data, through symlinks leading out of the folder. One run under an audit hook: no open()
    of anything outside; the model is still built and probed, the tokenizer refused with the reason."""
    from test_redteam_prompt import _tokenizer

    folder = _llama(tmp_path / "m")
    _tokenizer(folder)
    for name, text in (("generation_config.json", '{"max_length": 4242}'), ("tokenizer.json", None)):
        text = text or (folder / name).read_text()
        (folder / name).unlink()
        (folder / name).symlink_to(_outside(tmp_path, name, text))
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"w{i} w{i + 1}"}) + "\n" for i in range(3, 12)))
    r = _cli(tmp_path, folder, "--task", "causal-lm", "--data", data, "--probe-steps", "2", "--format", "json")
    assert "OPENED-OUTSIDE" not in r.stderr
    assert r.returncode in (0, 1), r.stderr
    report = json.loads(r.stdout)
    assert report["load_report"]["status"] == "ran" and report["probe"]["status"] == "ran"
    note = report["probe"]["inputs_note"]
    assert note.startswith("--data not used, synthetic inputs instead: tokenizer.json: resolves to ") and "outside" in note


def test_tokenizer_inside_the_folder_is_used_with_data(tmp_path):
    from test_redteam_prompt import _tokenizer

    from initcheck import check

    folder = _llama(tmp_path / "m")
    _tokenizer(folder)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"w{i} w{i + 1}"}) + "\n" for i in range(3, 12)))
    report = check(folder, task="causal-lm", data=str(data), probe_steps=2)
    assert report.scan.probe["status"] == "ran" and report.scan.probe["inputs_note"] is None


def test_transformers_reads_a_private_copy(tmp_path):
    """The staged folder: small files copied through a contained descriptor, weights linked to their
    checked real path, *.py only with trust_remote_code, anything leading out left out and said."""
    from initcheck import hf

    folder = _weights(tmp_path / "m")
    (folder / "config.json").write_text("{}")
    (folder / "modeling_x.py").write_text("# code\n")
    (folder / "generation_config.json").symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text("{}")
    with hf.staged(folder) as (copy, left_out):
        names = sorted(os.listdir(copy))
        assert names == ["config.json", "model.safetensors"]
        assert os.readlink(os.path.join(copy, "model.safetensors")) == str((folder / "model.safetensors").resolve())
        assert "outside the model folder" in left_out["generation_config.json"]
    assert not os.path.exists(copy)
    with hf.staged(folder, trust_remote_code=True) as (copy, _):
        assert "modeling_x.py" in os.listdir(copy)
