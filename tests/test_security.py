"""Untrusted checkpoints: pickles that would run code are scanned, reported and never loaded;
custom code is reported and never imported. Every test writes its own hostile files."""

import io
import json
import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from conftest import bert_config, findings_of, run_process, tree_digest
from initcheck.loader.pickle_scan import globals_in_stream, scan_file


class _Shell:
    """Unpickling this runs a shell command: the attack every test below must stop."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __reduce__(self):
        return (exec, ("open('/tmp/initcheck-never','w')",))


def _ic401(stdout):
    return [f for f in findings_of(stdout) if f["rule"] == "IC401"]


def _folder(tmp_path, name="m", config=True):
    d = tmp_path / name
    d.mkdir()
    if config:
        (d / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"], "model_type": "bert"}))
    return d


# --- the pickle scanner ----------------------------------------------------------------------

@pytest.mark.parametrize("proto", [0, 1, 2, 4, 5])
def test_scanner_names_os_system_in_every_protocol(proto):
    data = pickle.dumps({"w": _Shell("/tmp/x")}, protocol=proto)
    found = globals_in_stream(io.BytesIO(data), "t")
    assert any(g in ("posix.system", "os.system", "nt.system") for g in found)


def test_scanner_resolves_stack_global_through_the_memo():
    # proto 4: 'builtins' and 'exec' pushed, memoized, fetched back with BINGET before STACK_GLOBAL
    data = pickle.dumps([_Exec(), _Exec()], protocol=4)
    assert "builtins.exec" in globals_in_stream(io.BytesIO(data), "t")


def test_scanner_is_not_fooled_by_strings_popped_off_the_stack():
    # real stack at STACK_GLOBAL: 'os' 'system'; the two strings pushed last were popped again
    ops = (b"\x80\x04" + b"\x8c\x02os" + b"\x8c\x06system" + b"\x8c\x0ctorch._utils" + b"\x8c\x12_rebuild_tensor_v2"
           + b"00" + b"\x93" + b")R.")
    found = globals_in_stream(io.BytesIO(ops), "t")
    assert found == ["os.system"]


def test_scanner_reports_computed_operands_as_unresolved():
    # the module name comes out of a tuple, not a string opcode
    ops = b"\x80\x04" + b"\x8c\x02os\x85" + b"\x8c\x06system" + b"\x93)R."
    assert globals_in_stream(io.BytesIO(ops), "t")[0].startswith("<unresolved>")


def test_scanner_sees_every_pkl_member_of_a_zip(tmp_path):
    p = tmp_path / "two.bin"
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("archive/other/data.pkl", pickle.dumps(_Shell("/tmp/x"), protocol=2))
    p.write_bytes(buf.getvalue())
    assert "posix.system" in scan_file(str(p), "two.bin") or "os.system" in scan_file(str(p), "two.bin")


def test_scanner_judges_zip_by_magic_like_torch(tmp_path):
    # a legacy pickle with a zip archive glued on the end: torch.load reads the pickle, so must we
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
    p = tmp_path / "polyglot.bin"
    p.write_bytes(pickle.dumps(_Shell("/tmp/x"), protocol=2) + buf.getvalue())
    assert zipfile.is_zipfile(p)
    assert any(g.endswith(".system") for g in scan_file(str(p), "polyglot.bin"))


def test_benign_torch_save_imports_only_allowlisted_globals(tmp_path):
    from initcheck.loader import default_safe_globals
    from initcheck.loader.pickle_scan import is_allowed

    sd = {"a": torch.zeros(2, dtype=torch.bfloat16), "b": torch.nn.Parameter(torch.ones(3)), "c": torch.zeros(2).half(),
          "d": torch.arange(3), "e": torch.zeros(0), "f": torch.zeros(2, dtype=torch.float8_e4m3fn), "g": torch.ones(2) > 0}
    safe = default_safe_globals()
    for proto in (2, 4, 5):
        p = tmp_path / f"ok{proto}.pt"
        torch.save(sd, p, pickle_protocol=proto)
        assert [g for g in scan_file(str(p), p.name) if not is_allowed(g, safe)] == []


# --- end to end: a shell-command pickle is reported, not loaded, never run --------------------

@pytest.mark.parametrize("how", ["torch.save", "pickle.dumps", "legacy"])
def test_shell_command_pickle_is_reported_and_never_run(cli, tmp_path, marker, how):
    d = _folder(tmp_path)
    payload = {"bert.pooler.dense.weight": torch.zeros(4, 4), "evil": _Shell(marker)}
    path = d / "pytorch_model.bin"
    if how == "torch.save":
        torch.save(payload, path)
    elif how == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    before = tree_digest(d)
    r = cli(d, "--format", "json", "--no-probe")
    assert r.exit_code == 1, r.stderr
    (f,) = _ic401(r.stdout)
    assert f["severity"] == "error" and "system" in f["message"] and "pytorch_model.bin" in f["message"]
    assert f["file"] == "pytorch_model.bin" and "not loaded" in f["message"]
    assert json.loads(r.stdout)["target"]["files"]  # the run completed and reported the file
    assert tree_digest(d) == before


def test_shell_command_pickle_real_process(tmp_path, marker):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2, 2), "x": _Shell(marker)}, path)
    r = run_process(path, "--format", "json", "--no-probe")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert any("system" in f["message"] for f in _ic401(r.stdout))


def test_plain_pickle_of_a_tensor_is_refused(cli, tmp_path):
    # pickle.dumps(tensor) rebuilds storage through torch.storage._load_from_bytes, a full torch.load
    path = tmp_path / "m.bin"
    path.write_bytes(pickle.dumps({"w": torch.zeros(2, 2)}))
    r = cli(path, "--format", "json", "--no-probe")
    assert r.exit_code == 1 and "torch.storage._load_from_bytes" in _ic401(r.stdout)[0]["message"]


def test_builtins_exec_and_subprocess_are_named(cli, tmp_path):
    import subprocess

    class _Popen:
        def __reduce__(self):
            return (subprocess.Popen, (["true"],))

    path = tmp_path / "m.ckpt"
    path.write_bytes(pickle.dumps({"a": _Exec(), "b": _Popen()}, protocol=4))
    r = cli(path, "--format", "json", "--no-probe")
    assert r.exit_code == 1
    (f,) = _ic401(r.stdout)
    assert "builtins.exec" in f["message"] and "subprocess.Popen" in f["message"]


def test_refused_shard_keeps_the_other_shards(cli, tmp_path, marker):
    d = _folder(tmp_path, config=False)
    torch.save({"a.weight": torch.randn(8, 8) * 0.02}, d / "pytorch_model-00001-of-00002.bin")
    torch.save({"b.weight": torch.randn(8, 8) * 0.02, "x": _Shell(marker)}, d / "pytorch_model-00002-of-00002.bin")
    wm = {"a.weight": "pytorch_model-00001-of-00002.bin", "b.weight": "pytorch_model-00002-of-00002.bin"}
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": wm}))
    r = cli(d, "--format", "json", "--no-probe")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert [f["file"] for f in _ic401(r.stdout)] == ["pytorch_model-00002-of-00002.bin"]
    # both shards' weights are checked: b.weight is read from the parse, the Shell object a placeholder
    assert data["target"]["parameters"] == 128
    table = {f["path"]: f for f in data["target"]["files"]}
    assert table["pytorch_model-00002-of-00002.bin"]["verdict"] == "loaded"
    assert table["pytorch_model-00002-of-00002.bin"]["pickle"] == "unsafe"


def test_user_allow_lets_a_custom_global_load(cli, tmp_path):
    from fractions import Fraction  # in no list of the default pack: unknown

    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(2, 2), "ratio": Fraction(1, 3)}, path)
    r = cli(path, "--format", "json", "--no-probe")
    assert r.exit_code == 1 and "fractions.Fraction" in _ic401(r.stdout)[0]["message"]
    pack = tmp_path / "pack.toml"
    pack.write_text('[rules.unsafe-pickle-global]\nallow = ["fractions.*"]\n')
    r = cli(path, "--format", "json", "--no-probe", "--rules", pack)
    # allowed: no IC401, and the weights are read by initcheck's reader (the Fraction a placeholder)
    assert r.exit_code == 0 and not _ic401(r.stdout), r.stdout[-600:]
    assert json.loads(r.stdout)["target"]["parameters"] == 4


def test_benign_bin_checkpoint_passes_without_ic401(cli, tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    d = tmp_path / "bert"
    model = BertForSequenceClassification(bert_config(num_labels=2))
    model.save_pretrained(d)
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    r = cli(d, "--format", "json", "--no-probe")
    assert _ic401(r.stdout) == [] and r.exit_code == 0, r.stdout[-2000:]


def test_training_args_bin_with_shell_command_is_reported(cli, tmp_path, marker):
    d = tmp_path / "run"
    d.mkdir()
    save_file({"w": torch.randn(4, 4) * 0.1}, d / "model.safetensors")
    torch.save({"args": _Shell(marker)}, d / "training_args.bin")
    torch.save({"step": 3}, d / "optimizer.pt")  # harmless, not reported
    r = cli(d, "--format", "json", "--no-probe")
    assert r.exit_code == 1
    (f,) = _ic401(r.stdout)
    assert f["file"] == "training_args.bin" and "does not load" in f["message"]


# --- custom code --------------------------------------------------------------------------------

def _custom_code_folder(make_model, marker):
    d = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="custom")
    (d / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_custom_code_is_reported_and_never_imported(cli, make_model, marker):
    d = _custom_code_folder(make_model, marker)
    before = tree_digest(d)
    r = cli(d, "--format", "json", "--no-probe")
    (f,) = [f for f in findings_of(r.stdout) if f["rule"] == "IC402"]
    assert f["severity"] == "warning" and "modeling_evil.py" in f["message"] and "auto_map" in f["message"]
    assert tree_digest(d) == before  # no __pycache__ either


def test_custom_code_not_imported_when_building_the_task_model(make_model, marker):
    d = _custom_code_folder(make_model, marker)
    before = tree_digest(d)
    r = run_process(d, "--format", "json", "--no-probe", "--task", "sequence-classification", "--num-labels", "2")
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    assert tree_digest(d) == before
