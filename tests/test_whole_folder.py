"""The whole folder is untrusted (issue 15): a corpus of hostile side files, benign look-alikes and
bombs, built here from the published techniques of picklescan, modelscan and fickling.

Every payload is harmless: if anything ever ran it, its only effect would be a marker file in
tmp_path (and the ``marker`` fixture fails the test). Each hostile file must be reported at its
own file (IC401, naming the global); each benign look-alike must give no IC401 and no crash; each
bomb must be refused (or bounded) within seconds; the folder must stay byte-identical.
"""

import io
import json
import pickle
import struct
import time
import zipfile

import numpy as np
import pytest
import torch
from conftest import bert_config, findings_of, run_process, tree_digest
from safetensors.torch import save_file

MAX_S = 10.0  # the bound for any input, on 2 cores


def _run(cli, path, *extra):
    t = time.monotonic()
    r = cli(path, "--no-probe", "--format", "json", *extra)
    took = time.monotonic() - t
    assert took < MAX_S, f"{path}: {took:.1f} s"
    assert "Traceback" not in (r.stderr or ""), r.stderr
    return r


def _ic401(r) -> list:
    return [f for f in findings_of(r.stdout) if f["rule"] == "IC401"]


# --- building pickles by hand (the callable is named, never imported) ----------------------------

def _body(obj, proto) -> bytes:
    """The opcodes of ``obj`` without PROTO/FRAME/STOP, to splice after a GLOBAL."""
    raw = pickle.dumps(obj, protocol=min(proto, 2) if proto else 0)
    return raw[2:-1] if raw[:1] == b"\x80" else raw[:-1]


def call(module, name, args, proto=2) -> bytes:
    """``module.name(*args)`` as a pickle: GLOBAL (protocol 0-3) or STACK_GLOBAL (4+), then REDUCE."""
    if proto >= 4:
        head = b"\x80" + bytes([proto])
        for s in (module, name):
            e = s.encode()
            head += b"\x8c" + bytes([len(e)]) + e
        return head + b"\x93" + _body(args, 2) + b"R."
    head = (b"\x80" + bytes([proto])) if proto >= 2 else b""
    return head + b"c" + module.encode() + b"\n" + name.encode() + b"\n" + _body(args, proto) + b"R."


def _chain(resolver: bytes, cmd: str) -> bytes:
    """``resolver(...)`` returns a callable, which is then called with ``cmd`` (indirection bypasses)."""
    return resolver[:-1] + _body((cmd,), 2) + b"R."


def payloads(marker) -> dict:
    """name -> (pickle bytes, a global IC401 must name). Harmless: each would only touch ``marker``."""
    m = str(marker)
    code = f"open({m!r}, 'w').close()"
    touch = f"touch {m}"
    p = {
        # the classics (picklescan / modelscan test generators)
        "os.system": (call("os", "system", (touch,)), "os.system"),
        "posix.system": (call("posix", "system", (touch,)), "posix.system"),
        "builtins.exec": (call("builtins", "exec", (code,)), "builtins.exec"),
        "py2 __builtin__.eval": (call("__builtin__", "eval", (code,), proto=0), "builtins.eval"),
        "subprocess.Popen": (call("subprocess", "Popen", (["touch", m],), proto=4), "subprocess.Popen"),
        "runpy._run_code": (call("runpy", "_run_code", (code, {})), "runpy._run_code"),
        # picklescan 2025 advisories: profilers, tracers and tools that run code strings
        "cProfile.run": (call("cProfile", "run", (code,)), "cProfile.run"),
        "cProfile.runctx": (call("cProfile", "runctx", (code, {}, {})), "cProfile.runctx"),
        "profile.run": (call("profile", "run", (code,)), "profile.run"),
        "profile.Profile.runctx": (call("profile", "Profile.runctx", (None, code, {}, {}), proto=4), "profile.Profile.runctx"),
        "trace.Trace.runctx": (call("trace", "Trace.runctx", (None, code), proto=4), "trace.Trace.runctx"),
        "timeit.timeit": (call("timeit", "timeit", (code, "pass", None, 1)), "timeit.timeit"),
        "pip.main": (call("pip", "main", (["--log", m, "--version"],)), "pip.main"),
        "torch.utils.bottleneck": (call("torch.utils.bottleneck.__main__", "run_cprofile", (code, {}), proto=4),
                                   "torch.utils.bottleneck.__main__.run_cprofile"),
        "lib2to3 Grammar.loads": (call("lib2to3.pgen2.grammar", "Grammar.loads", (b"",), proto=4),
                                  "lib2to3.pgen2.grammar.Grammar.loads"),
        "idlelib runcode": (call("idlelib.run", "Executive.runcode", (None, code), proto=4), "idlelib.run.Executive.runcode"),
        "numpy runstring": (call("numpy.testing._private.utils", "runstring", (code, {})), "numpy.testing._private.utils.runstring"),
        "pydoc.pipepager": (call("pydoc", "pipepager", ("x", touch)), "pydoc.pipepager"),
        "_io.FileIO": (call("_io", "FileIO", (m, "w")), "_io.FileIO"),
        "builtins.open": (call("builtins", "open", (m, "w")), "builtins.open"),
        "distutils write_file": (call("distutils.file_util", "write_file", (m, [])), "distutils.file_util.write_file"),
        "nested pickle.loads": (call("pickle", "loads", (call("os", "system", (touch,)),)), "pickle.loads"),
        "torch.load": (call("torch", "load", (m + ".pt",)), "torch.load"),
        # indirection (fickling's bypass suite, picklescan GHSA-vvpj-8cmc-gx39)
        "pkgutil.resolve_name": (_chain(call("pkgutil", "resolve_name", ("os:system",)), touch), "pkgutil.resolve_name"),
        "importlib.import_module": (call("importlib", "import_module", ("os",)), "importlib.import_module"),
        "functools.partial": (call("functools", "partial", (0,)), "functools.partial"),
        "numpy __builtins__ (modelscan #89)": (call("numpy", "prod.os.system", (touch,), proto=4), "numpy.prod.os.system"),
    }
    # INST and OBJ build an object by calling the class: protocol 0/1 opcodes
    p["INST"] = (b"(S'" + touch.encode() + b"'\nios\nsystem\n.", "os.system")
    p["OBJ"] = (b"\x80\x02(cos\nsystem\nX" + struct.pack("<I", len(touch)) + touch.encode() + b"o.", "os.system")
    # memo confusion (picklescan #14): BINPUT and MEMOIZE mixed so a scanner mislabels the memo
    memo = (b"\x80\x04\x8c\x02osq\x05\x8c\x06systemq\x06" + b"\x8c\x0ctorch._utils\x94\x8c\x12_rebuild_tensor_v2\x94"
            + b"h\x05h\x06\x93" + b"\x8c" + bytes([len(touch)]) + touch.encode() + b"\x85R.")
    p["memo MEMOIZE confusion"] = (memo, "os.system")
    # STACK_GLOBAL whose operands are computed (not string constants): unresolvable, so reported
    p["computed STACK_GLOBAL"] = (b"\x80\x04" + call("builtins", "str", ("os",))[2:-1] + b"\x8c\x06system\x93"
                                  + _body((touch,), 2) + b"R.", "<unresolved>")
    # copyreg extension codes name a global by number
    p["EXT1"] = (b"\x80\x02\x82\x01" + _body((touch,), 2) + b"R.", "<unresolved>")
    return p


# --- where a pickle can sit in a folder ---------------------------------------------------------

def _torch_zip(data_pkl: bytes, extra: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/version", b"3\n")
        for k, v in (extra or {}).items():
            z.writestr(k, v)
    return buf.getvalue()


def _npy_object(pickle_bytes: bytes) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + pickle_bytes


def _zip_of(members: dict, compress=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as z:
        for k, v in members.items():
            z.writestr(k, v)
    return buf.getvalue()


def positions(payload: bytes) -> dict:
    """relative path -> file bytes: the payload in every place a folder can hide a pickle."""
    proto = payload if payload[:1] == b"\x80" else b"\x80\x02" + payload  # loaders accept a PROTO in front
    return {
        "training_args.bin": payload,
        "optimizer.pt": _torch_zip(proto),
        "scheduler.pt": proto,
        "rng_state.pth": payload,
        "extra.pkl": payload,
        "features.joblib": payload,
        "cache.dat": payload,
        "objects.npy": _npy_object(proto),
        "arrays.npz": _zip_of({"a.npy": _npy_object(proto)}),
        "bundle.zip": _zip_of({"inner/state.pkl": proto}),
        "state": proto,  # no extension: found by content (PROTO opcode)
        "checkpoint-1/optimizer.pt": payload,
    }


def _clean_weights(d):
    d.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.randn(8, 8) * 0.05, "b": torch.zeros(8)}, d / "model.safetensors")


@pytest.mark.parametrize("name", sorted(payloads("m")))
def test_hostile_side_files_are_reported_at_their_file(cli, tmp_path, marker, name):
    data, glob = payloads(marker)[name]
    d = tmp_path / "ckpt"
    _clean_weights(d)
    files = positions(data)
    for rel, raw in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(raw)
    before = tree_digest(d)
    r = _run(cli, d)
    assert r.exit_code == 1, (r.exit_code, r.stderr)
    found = {f["file"]: f for f in _ic401(r)}
    assert set(files) <= set(found), sorted(set(files) - set(found))
    for rel in files:
        assert rel in found[rel]["message"] and glob in (found[rel]["value"] or ""), found[rel]
    # the file table lists them, with their kind and verdict
    table = {f["path"]: f for f in json.loads(r.stdout)["target"]["files"]}
    assert table["model.safetensors"]["kind"] == "weights" and table["model.safetensors"]["verdict"] == "loaded"
    assert table["training_args.bin"]["kind"] == "training state"
    assert all(table[rel]["verdict"] in ("unsafe", "not scanned") for rel in files), {k: table[k] for k in files}
    assert tree_digest(d) == before


def test_hostile_weights_are_refused_not_loaded(cli, tmp_path, marker):
    """The same payloads as the weight file itself: refused (never loaded), reported at the file."""
    for i, (name, (data, glob)) in enumerate(sorted(payloads(marker).items())):
        d = tmp_path / f"w{i}"
        d.mkdir()
        (d / "pytorch_model.bin").write_bytes(_torch_zip(data if data[:1] == b"\x80" else b"\x80\x02" + data))
        before = tree_digest(d)
        r = _run(cli, d)
        assert r.exit_code in (1, 2), (name, r.exit_code)
        if r.exit_code == 1:
            (f,) = _ic401(r)
            assert f["file"] == "pytorch_model.bin" and glob in f["value"], (name, f)
        else:  # the restricted reader refuses the layout before the rule runs: one line, the file named
            assert "pytorch_model.bin" in r.stderr and "\n" not in r.stderr.strip(), (name, r.stderr)
        assert tree_digest(d) == before


def test_payloads_never_run_on_the_task_and_probe_paths(make_model, tmp_path, marker):
    """Every payload at once, next to a real model, with --task (builds the model) and the probe."""
    d = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="victim")
    for i, (_, (data, _)) in enumerate(sorted(payloads(marker).items())):
        for rel, raw in positions(data).items():
            p = d / f"p{i}" / rel if "/" in rel else d / f"p{i}-{rel}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(raw)
    before = tree_digest(d)
    for extra in (["--no-probe"], ["--task", "sequence-classification", "--num-labels", "2"]):
        r = run_process(d, "--format", "json", *extra, timeout=300)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert len({f["file"] for f in findings_of(r.stdout) if f["rule"] == "IC401"}) == 12 * len(payloads(marker))
        assert not marker.exists() and tree_digest(d) == before


# --- benign look-alikes -------------------------------------------------------------------------

def _trainer_side_files(d):
    from transformers import TrainingArguments

    lin = torch.nn.Linear(8, 8)
    opt = torch.optim.AdamW(lin.parameters())
    lin(torch.randn(2, 8)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    torch.save(opt.state_dict(), d / "optimizer.pt")
    torch.save(sched.state_dict(), d / "scheduler.pt")
    torch.save({"python": __import__("random").getstate(), "numpy": np.random.get_state(),
                "cpu": torch.random.get_rng_state()}, d / "rng_state.pth")
    torch.save(torch.amp.GradScaler("cpu", enabled=False).state_dict(), d / "scaler.pt")
    torch.save(TrainingArguments(output_dir=str(d.parent / "out"), report_to=[]), d / "training_args.bin")
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    np.save(d / "plain.npy", np.arange(4, dtype=np.float32))
    np.savez(d / "plain.npz", a=np.ones(3))
    (d / "tokenizer.json").write_text("{}")
    (d / "notes.txt").write_text("(c) 2026, not a pickle\n")
    (d / "cos").write_text("cos\nsystem\n is not a pickle without a pickle name\n")


def test_trainer_checkpoint_side_files_are_clean(cli, tmp_path, marker):
    d = tmp_path / "checkpoint-500"
    _clean_weights(d)
    _trainer_side_files(d)
    before = tree_digest(d)
    r = _run(cli, d)
    assert r.exit_code in (0, 1) and _ic401(r) == [], [f["message"] for f in _ic401(r)]
    table = {f["path"]: f for f in json.loads(r.stdout)["target"]["files"]}
    assert table["optimizer.pt"]["verdict"] == "clean" and table["optimizer.pt"]["kind"] == "training state"
    assert table["training_args.bin"]["verdict"] == "clean"
    assert table["tokenizer.json"]["kind"] == "tokenizer" and table["notes.txt"]["verdict"] == "no pickle"
    assert tree_digest(d) == before


def _lin_sd():
    torch.manual_seed(0)
    return torch.nn.Linear(8, 4).state_dict()


def _benign_weights() -> dict:
    """name -> (object to torch.save, number of weight tensors initcheck must read)."""
    sd = _lin_sd()
    lin = torch.nn.Linear(8, 4)
    opt = torch.optim.AdamW(lin.parameters())
    lin(torch.randn(2, 8)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    return {
        "nested model/optimizer/epoch": ({"model": sd, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                          "epoch": 3}, 2),
        "lightning state_dict": ({"state_dict": sd, "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
                                  "epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.4.0"}, 2),
        "model_state_dict": ({"model_state_dict": sd, "optimizer_state_dict": opt.state_dict(), "loss": torch.tensor(0.3)}, 2),
        "flat with optimizer next to it": ({**sd, "optimizer": opt.state_dict()}, 2),
        "sizes, devices, dtypes": ({**sd, "meta": {"size": torch.Size([4, 8]), "device": torch.device("cpu"),
                                                   "dtype": torch.float16, "layout": "strided"}}, 2),
        "complex metadata": ({**sd, "c": complex(1, 2), "cs": [1 + 2j], "freqs": torch.polar(torch.ones(3), torch.zeros(3))}, 2),
        "sets, bytes, Counter": ({**sd, "s": {1, 2}, "b": bytearray(b"ab"), "raw": b"xy",
                                  "n": __import__("collections").Counter("ab")}, 2),
    }


@pytest.mark.parametrize("name", sorted(_benign_weights()))
def test_benign_nested_checkpoints(cli, tmp_path, marker, monkeypatch, name):
    obj, n = _benign_weights()[name]
    for no_torch in ("0", "1"):
        monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", no_torch)
        d = tmp_path / f"b{no_torch}"
        d.mkdir(exist_ok=True)
        torch.save(obj, d / "pytorch_model.bin")
        before = tree_digest(d)
        r = _run(cli, d)
        assert r.exit_code in (0, 1), (no_torch, r.stderr)
        assert _ic401(r) == [], _ic401(r)
        out = json.loads(r.stdout)
        assert out["target"]["tensors"] == n, out["target"]
        assert tree_digest(d) == before


def test_every_protocol_torch_writes(cli, tmp_path, marker, monkeypatch):
    """torch.save in every pickle protocol, zip and legacy, read by initcheck's own reader (no torch.load).

    Protocol 0 stores persistent ids as text, which torch.load(weights_only=True) cannot read either
    (nor protocols 0, 1, 4, 5 at all in torch 2.13): initcheck refuses it with one line.
    """
    monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", "1")
    sd = {"model": _lin_sd(), "epoch": 1}
    for zip_format in (True, False):
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            d = tmp_path / f"p{proto}{'z' if zip_format else 'l'}"
            d.mkdir()
            torch.save(sd, d / "pytorch_model.bin", pickle_protocol=proto, _use_new_zipfile_serialization=zip_format)
            before = tree_digest(d)
            r = _run(cli, d)
            if proto == 0:
                err = r.stderr.strip()
                assert r.exit_code == 2 and "pytorch_model.bin" in err and "\n" not in err, err
            else:
                assert r.exit_code in (0, 1) and _ic401(r) == [], (proto, zip_format, r.stderr)
                assert json.loads(r.stdout)["target"]["tensors"] == 2
            assert tree_digest(d) == before


# --- bombs --------------------------------------------------------------------------------------

def _bombs() -> dict:
    """name -> data.pkl bytes that cost far more to evaluate, walk, hash or print than to store."""
    long_list = b"\x80\x02]" + b"K\x01a" * 1_100_000 + b"."  # 2.2M opcodes
    memo = b"\x80\x02K\x01" + b"".join(b"r" + struct.pack("<I", i) for i in range(1_100_000)) + b"."
    deep = b"\x80\x02" + b"(" * 5000 + b"t" * 5000 + b"."
    # a tuple of shared tuples, 200 deep (DUP, TUPLE2), as a dict key: hashing it visits 2**200 nodes
    tup = b"\x80\x02})" + b"2\x86" * 200 + b"K\x01s."
    # quadratic for a scanner that searches the stack for the last MARK
    marks = b"\x80\x02" + b"K\x01" * 400_000 + b"(1" * 400_000 + b"0" * 399_999 + b"."
    return {"opcodes": long_list, "memo": memo, "nesting": deep, "hash": tup, "marks": marks}


def _dag_state_dict(levels=60):
    """A state dict whose dicts are shared: 2**levels paths to one tensor (small on disk)."""
    d = {"w": torch.zeros(2)}
    for _ in range(levels):
        d = {"a": d, "b": d}
    return d


@pytest.mark.parametrize("name", ["opcodes", "memo", "nesting", "hash"])
def test_bombs_as_weights_are_refused_in_seconds(cli, tmp_path, marker, name):
    d = tmp_path / "bomb"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(_torch_zip(_bombs()[name]))
    before = tree_digest(d)
    r = _run(cli, d)
    err = r.stderr.strip()
    assert r.exit_code == 2 and err.startswith("initcheck: error: pytorch_model.bin") and "\n" not in err, (r.exit_code, err)
    assert tree_digest(d) == before


def test_bombs_as_side_files_are_reported_in_seconds(cli, tmp_path, marker):
    d = tmp_path / "ckpt"
    _clean_weights(d)
    for name, data in _bombs().items():
        (d / f"{name}.pkl").write_bytes(data)
    torch.save(_dag_state_dict(), d / "optimizer.pt")
    before = tree_digest(d)
    r = _run(cli, d)
    assert r.exit_code in (0, 1)
    flagged = {f["file"] for f in _ic401(r)}
    assert {"opcodes.pkl", "memo.pkl", "nesting.pkl"} <= flagged, flagged  # over a limit: not scanned, said so
    assert tree_digest(d) == before


def test_shared_dict_bomb_as_weights_is_bounded(cli, tmp_path, marker, monkeypatch):
    for no_torch in ("0", "1"):
        monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", no_torch)
        d = tmp_path / f"dag{no_torch}"
        d.mkdir()
        torch.save(_dag_state_dict(), d / "pytorch_model.bin")
        r = _run(cli, d)
        assert r.exit_code in (0, 1, 2) and "\n" not in r.stderr.strip()


# --- which file from_pretrained opens -----------------------------------------------------------

def test_transformers_weights_in_config_names_the_file_that_is_judged(cli, tmp_path, marker):
    d = tmp_path / "explicit"
    _clean_weights(d)
    (d / "config.json").write_text(json.dumps({"transformers_weights": "real.bin"}))
    (d / "real.bin").write_bytes(_torch_zip(call("os", "system", (f"touch {marker}",))))
    r = _run(cli, d)
    (f,) = _ic401(r)
    assert f["file"] == "real.bin" and "not loaded" in f["message"]  # judged as the weights, refused


def test_single_safetensors_wins_over_its_index_as_in_transformers(cli, tmp_path, marker):
    d = tmp_path / "both"
    _clean_weights(d)
    (d / "pytorch_model-00001.bin").write_bytes(_torch_zip(call("os", "system", (f"touch {marker}",))))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "pytorch_model-00001.bin"}}))
    r = _run(cli, d)
    table = {f["path"]: f for f in json.loads(r.stdout)["target"]["files"]}
    assert table["model.safetensors"]["verdict"] == "loaded"
    assert table["pytorch_model-00001.bin"]["verdict"] == "unsafe"  # still scanned and reported
    assert [f["file"] for f in _ic401(r)] == ["pytorch_model-00001.bin"]


def test_safetensors_index_pointing_at_pickles_loads_those(cli, tmp_path, marker):
    d = tmp_path / "idx"
    d.mkdir()
    (d / "pytorch_model-00001.bin").write_bytes(_torch_zip(call("os", "system", (f"touch {marker}",))))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "pytorch_model-00001.bin"}}))
    r = _run(cli, d)
    (f,) = _ic401(r)
    assert f["file"] == "pytorch_model-00001.bin" and "not loaded" in f["message"]


def test_sarif_has_one_location_per_ic401_file(cli, tmp_path, marker):
    d = tmp_path / "ckpt"
    _clean_weights(d)
    for rel in ("training_args.bin", "extra.pkl"):
        (d / rel).write_bytes(call("os", "system", (f"touch {marker}",)))
    r = cli(d, "--no-probe", "--format", "sarif")
    run = json.loads(r.stdout)["runs"][0]
    locs = sorted(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                  for res in run["results"] if res["ruleId"] == "IC401")
    assert locs == ["extra.pkl", "training_args.bin"]
    assert {"extra.pkl", "training_args.bin", "model.safetensors"} <= {a["location"]["uri"] for a in run["artifacts"]}
