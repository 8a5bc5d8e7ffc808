"""Issue 29A: tensors read out of any pickle without running it; three tiers of globals; formats by content.

Every file here is real: torch.save archives holding real omegaconf objects, argparse namespaces,
torch's TorchVersion, pickled nn.Module subclasses defined in this test module (a detector saved
the way Ultralytics saves one). Each is read and judged (a planted zero head is found), and its
pickle verdict is a separate statement: inert classes are IC404 info, unknown classes an IC401
error (fail closed), anything that can run code an IC401 error however it is carried. Hostile
payloads would only create a marker file, which must never appear.
"""

import argparse
import collections
import io
import json
import os
import pickle
import tarfile
import typing
import zipfile
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import findings_of, tree_digest

# the globals a real Lightning 2.6.6 Trainer.save_checkpoint wrote for a LightningModule whose
# save_hyperparameters() got an omegaconf DictConfig (measured once; the file below must match)
LIGHTNING_GLOBALS = {"omegaconf.dictconfig.DictConfig", "omegaconf.base.ContainerMetadata", "typing.Any", "builtins.dict",
                     "collections.defaultdict", "omegaconf.nodes.AnyNode", "omegaconf.base.Metadata",
                     "omegaconf.listconfig.ListConfig", "builtins.list", "builtins.int"}


class _Shell:
    """Unpickling this runs a shell command that creates the marker: it must never run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _run(cli, path, *extra):
    r = cli(path, "--no-probe", "--format", "json", *extra)
    assert r.exit_code in (0, 1), (r.exit_code, r.stderr)
    return r, json.loads(r.stdout)


def _rules(out, rule):
    return [f for f in out["findings"] if f["rule"] == rule]


def _errors(out):
    return [(f["rule"], f["param"]) for f in out["findings"] if f["severity"] == "error"]


def _row(out, path):
    return {f["path"]: f for f in out["target"]["files"]}[path]


# --- models ---------------------------------------------------------------------------------------

def _classifier(zero_head=False):
    torch.manual_seed(0)
    m = nn.Sequential(OrderedDict(encoder=nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64)),
                                  head=nn.Sequential(OrderedDict(dense=nn.Linear(64, 64), out_proj=nn.Linear(64, 4)))))
    if zero_head:
        for p in m.head.parameters():
            nn.init.zeros_(p)
    return m


class ConvBlock(nn.Module):
    """Ultralytics' Conv: conv, batch norm, SiLU."""

    def __init__(self, c1, c2, k=3):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()


class Detect(nn.Module):
    def __init__(self, c, nc=3):
        super().__init__()
        self.cv2 = nn.ModuleList([nn.Sequential(ConvBlock(c, c), nn.Conv2d(c, 4, 1))])
        self.cv3 = nn.ModuleList([nn.Sequential(ConvBlock(c, c), nn.Conv2d(c, nc, 1))])


class DetectionModel(nn.Module):
    """A detector as Ultralytics pickles it: the module classes themselves, under ``model``."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(ConvBlock(3, 16), ConvBlock(16, 32), ConvBlock(32, 32), Detect(32))
        self.register_buffer("stride", torch.tensor([8.0]))
        self.names = {0: "cat", 1: "dog", 2: "bird"}
        self.yaml = {"nc": 3, "backbone": [[-1, 1, "Conv", [16, 3, 2]]]}


def _detector(zero_head=False):
    torch.manual_seed(0)
    m = DetectionModel()
    if zero_head:  # the class branch's last conv and its ConvBlock zeroed: no gradient reaches either
        nn.init.zeros_(m.model[3].cv3[0][0].conv.weight)
        nn.init.zeros_(m.model[3].cv3[0][1].weight)
    return m


# --- writers: the layouts real code saves ---------------------------------------------------------

def _lightning_ckpt(path, model, extra=None):
    """What Lightning's Trainer.save_checkpoint writes, built from the same real objects."""
    from omegaconf import OmegaConf

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 32)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 10)
    hparams = OmegaConf.create({"lr": 1e-3, "layers": [32, 64], "optim": {"name": "adamw", "betas": [0.9, 0.999]}})
    ckpt = {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.6",
        "state_dict": OrderedDict((f"model.{k}", v) for k, v in model.state_dict().items()),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.25),
                                                                "best_model_path": "/runs/epoch=3.ckpt"}},
        "optimizer_states": [opt.state_dict()], "lr_schedulers": [sched.state_dict()],
        "hparams_name": "cfg", "hyper_parameters": hparams, **(extra or {}),
    }
    torch.save(ckpt, path)
    return path


def _ultralytics(path, model, layout="model"):
    """Ultralytics' trainer: the module itself in half precision, under "model" or "ema"."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    half = model.half()
    ckpt = {"epoch": 5, "best_fitness": 0.5, "model": half if layout == "model" else None,
            "ema": half if layout == "ema" else None, "updates": 40, "optimizer": opt.state_dict(),
            "train_args": {"lr0": 0.01, "imgsz": 64}, "date": "2026-12-03T08:00:00", "version": "8.3.0"}
    torch.save(ckpt, path)
    return path


# --- 1. tensors read out of any pickle; two statements -------------------------------------------

@pytest.mark.parametrize("zero_head", [False, True], ids=["healthy", "zero-head"])
def test_lightning_ckpt_with_omegaconf_hparams_is_read_and_judged(cli, tmp_path, zero_head):
    pytest.importorskip("omegaconf")
    from initcheck.loader.pickle_scan import scan_file

    path = _lightning_ckpt(tmp_path / "last.ckpt", _classifier(zero_head))
    assert LIGHTNING_GLOBALS <= set(scan_file(str(path), path.name))
    r, out = _run(cli, path)
    assert not _rules(out, "IC401")  # inert classes are never an error
    (info,) = _rules(out, "IC404")
    assert info["severity"] == "info" and "omegaconf.dictconfig.DictConfig" in info["value"]
    assert "typing.Any" in info["value"] and "collections.defaultdict" in info["value"]
    row = _row(out, "last.ckpt")
    assert (row["verdict"], row["pickle"], row["reader"]) == ("loaded", "inert", "initcheck")
    for key in ("optimizer_states", "lr_schedulers", "loops", "callbacks"):
        assert key in row["note"]
    assert out["target"]["tensors"] == 8  # the state_dict: 4 linears (the callback's score is not a weight)
    if zero_head:
        assert r.exit_code == 1
        assert {p for rule, p in _errors(out) if rule == "IC102"} == {"model.head.dense.weight", "model.head.out_proj.weight"}
    else:
        assert r.exit_code == 0 and _errors(out) == [], _errors(out)


def test_checkpoint_holding_torch_version_is_read(cli, tmp_path):
    path = tmp_path / "model.pth"
    model = _classifier()
    torch.save({"state_dict": model.state_dict(), "torch_version": torch.__version__, "epoch": 2}, path)
    r, out = _run(cli, path)
    assert r.exit_code == 0 and not _rules(out, "IC401")
    (info,) = _rules(out, "IC404")
    assert info["value"] == "torch.torch_version.TorchVersion"
    assert out["target"]["tensors"] == 8 and _row(out, "model.pth")["pickle"] == "inert"


@pytest.mark.parametrize("layout", ["model", "ema"])
def test_pickled_detector_is_read_with_state_dict_names(cli, tmp_path, layout):
    from initcheck.loader import open_checkpoint

    model = _detector()
    path = _ultralytics(tmp_path / "best.pt", model, layout)
    ckpt = open_checkpoint(path)
    reader = ckpt.readers["best.pt"]
    # the module classes are never imported: the tensors come out of placeholders, named as state_dict() names them
    assert [e.name for e in ckpt.entries] == list(model.state_dict())
    assert all(e.dtype in ("float16", "int64") for e in ckpt.entries)
    assert reader.reader == "initcheck" and reader.tier == "unsafe"
    assert f"{__name__}.DetectionModel" in ckpt.refused["best.pt"]
    ckpt.close()


def test_detector_verdict_follows_its_defects_once_its_classes_are_classified(cli, tmp_path):
    """Unknown classes are an error by default (fail closed); a pack that lowers them to a warning
    leaves an exit code that says only what the weights say."""
    ok = _ultralytics(tmp_path / "ok.pt", _detector())
    bad = _ultralytics(tmp_path / "bad.pt", _detector(zero_head=True))
    r, out = _run(cli, ok)
    (f,) = _rules(out, "IC401")
    assert r.exit_code == 1 and f["severity"] == "error" and f"{__name__}.DetectionModel" in f["value"]
    # what torch.load would do, exactly
    assert "torch.load(weights_only=True) raises UnpicklingError on" in f["message"]
    assert "add_safe_globals" in f["message"] and "weights_only=False would import and call" in f["message"]
    assert "tensor(s) were read" in f["message"] and "not loaded" in f["message"]
    pack = tmp_path / "pack.toml"
    pack.write_text('[rules.unsafe-pickle-global]\nunknown_severity = "warning"\n')
    r, out = _run(cli, ok, "--rules", pack)
    assert r.exit_code == 0 and _rules(out, "IC401")[0]["severity"] == "warning"
    assert [f["rule"] for f in out["findings"] if f["severity"] != "info"] == ["IC401"], out["findings"]
    r, out = _run(cli, bad, "--rules", pack)
    zeroed = {"model.3.cv3.0.0.conv.weight", "model.3.cv3.0.1.weight"}
    assert {f["param"] for f in _rules(out, "IC102")} == zeroed, out["findings"]


def test_training_args_namespace_is_inert_beside_the_weights(cli, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    save_file({k: v.contiguous() for k, v in _classifier().state_dict().items()}, d / "model.safetensors")
    torch.save(argparse.Namespace(lr=3e-4, epochs=3, output_dir="out"), d / "training_args.bin")
    r, out = _run(cli, d)
    assert r.exit_code == 0 and not _rules(out, "IC401")
    (info,) = _rules(out, "IC404")
    assert info["file"] == "training_args.bin" and info["value"] == "argparse.Namespace"
    assert _row(out, "training_args.bin")["verdict"] == "inert"
    # named as the checkpoint itself: it holds no tensors, which is bad input, not a finding
    r = cli(d / "training_args.bin", "--no-probe")
    assert r.exit_code == 2 and "holds no tensors" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_weights_beside_a_shell_payload_are_judged_and_the_file_is_an_error(cli, tmp_path, marker):
    pytest.importorskip("omegaconf")
    path = _lightning_ckpt(tmp_path / "evil.ckpt", _classifier(zero_head=True), extra={"x": _Shell(marker)})
    before = tree_digest(tmp_path)
    r, out = _run(cli, path)
    (f,) = _rules(out, "IC401")
    assert f["severity"] == "error" and "posix.system" in f["value"] and "8 tensor(s) were read" in f["message"] and "not loaded" in f["message"]
    row = _row(out, "evil.ckpt")
    assert (row["verdict"], row["pickle"]) == ("loaded", "unsafe")  # checked, and unsafe to unpickle
    assert {p for rule, p in _errors(out) if rule == "IC102"} == {"model.head.dense.weight", "model.head.out_proj.weight"}
    assert tree_digest(tmp_path) == before


# --- 2. no inert entry can be combined into a call ------------------------------------------------

def _global(module, name, proto=2):
    if proto >= 4:
        return (b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93")
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s):
    return b"X" + len(s).to_bytes(4, "little") + s.encode()


def _gadgets(marker) -> dict:
    """name -> (pickle bytes, the global IC401 must name). Each would only touch ``marker``."""
    touch = f"touch {marker}"
    shell = _global("posix", "system") + b"(" + _str(touch) + b"tR"
    return {
        # an inert class as the carrier of a dangerous callable: defaultdict(os.system)
        "defaultdict(os.system)": (b"\x80\x02" + _global("collections", "defaultdict") + _global("posix", "system")
                                   + b"\x85R.", "posix.system"),
        # a Namespace whose attribute is the result of a call
        "Namespace(cmd=os.system(...))": (pickle.dumps(argparse.Namespace(cmd=_Shell(marker)), protocol=2), "posix.system"),
        # BUILD into an inert class's __setstate__ with attacker data that is itself a call
        "DictConfig BUILD state": (b"\x80\x02" + _global("omegaconf.dictconfig", "DictConfig") + b")\x81}(" + _str("_content")
                                   + shell + b"ub.", "posix.system"),
        # REDUCE on an inert class's method, reached by a dotted name (protocol 4 resolves it with getattr)
        "Namespace.__init__": (b"\x80\x04" + _global("argparse", "Namespace.__init__", 4) + b")R.", "argparse.Namespace.__init__"),
        "defaultdict.fromkeys": (b"\x80\x04" + _global("collections", "defaultdict.fromkeys", 4) + b"(" + _str(touch)
                                 + b"tR.", "collections.defaultdict.fromkeys"),
        # an inert module path leading to os: omegaconf.nodes imports os? pickle would still getattr through it
        "omegaconf.nodes.os.system": (b"\x80\x04" + _global("omegaconf.nodes", "os.system", 4) + b"(" + _str(touch) + b"tR.",
                                      "omegaconf.nodes.os.system"),
        # typing.Any as the callable, its argument a call: the call is what is judged
        "typing.Any(os.system(...))": (b"\x80\x02" + _global("typing", "Any") + b"(" + shell + b"tR.", "posix.system"),
        # a __reduce_ex__ gadget: getattr(typing.Any, "...") then a call of the result
        "getattr(Any, ...)": (b"\x80\x02" + _global("builtins", "getattr") + b"(" + _global("typing", "Any") + _str("__call__")
                              + b"tR(" + _str(touch) + b"tR.", "builtins.getattr"),
        # copyreg's constructor building an inert class with a dangerous base
        "_reconstructor": (b"\x80\x02" + _global("copyreg", "_reconstructor") + b"(" + _global("argparse", "Namespace")
                           + _global("posix", "system") + b"NtR.", "posix.system"),
    }


@pytest.mark.parametrize("name", list(_gadgets("m")))
def test_no_inert_class_carries_a_call(cli, tmp_path, marker, name):
    from initcheck.loader.pickle_scan import scan_file

    data, glob = _gadgets(marker)[name]
    d = tmp_path / "m"
    d.mkdir()
    save_file({"w": torch.randn(8, 8) * 0.02}, d / "model.safetensors")
    (d / "training_args.bin").write_bytes(data)
    # and as the weight file itself, in a torch archive
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", data)
    (tmp_path / "w.pt").write_bytes(buf.getvalue())
    assert glob in scan_file(str(d / "training_args.bin"), "training_args.bin")
    for target, rel in ((d, "training_args.bin"), (tmp_path / "w.pt", "w.pt")):
        r = cli(target, "--no-probe", "--format", "json")
        assert r.exit_code == 1, (name, r.exit_code, r.stderr)
        (f,) = [f for f in findings_of(r.stdout) if f["rule"] == "IC401"]
        assert f["severity"] == "error" and f["file"] == rel and glob in f["value"], (name, f)


def test_a_pack_lowering_unknown_classes_never_lowers_dangerous_ones(cli, tmp_path, marker):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.randn(4, 4), "cb": collections.defaultdict(list), "x": _Shell(marker)}, path)
    pack = tmp_path / "pack.toml"
    pack.write_text('[rules.unsafe-pickle-global]\nunknown_severity = "info"\n')
    r, out = _run(cli, path, "--rules", pack)
    (f,) = _rules(out, "IC401")
    assert r.exit_code == 1 and f["severity"] == "error" and f["value"] == "posix.system"
    assert _rules(out, "IC404")[0]["value"] == "collections.defaultdict, builtins.list"


def test_every_inert_entry_has_a_reason_and_an_exact_name():
    from initcheck.loader import default_safe_globals
    from initcheck.packs import load_pack

    from initcheck.packs import builtin_packs

    for name in builtin_packs():  # no shipped pack lowers unknown globals: fail closed
        assert load_pack(name).rules["IC401"]["unknown_severity"] == "error", name
    inert = load_pack().rules["IC401"]["inert"]
    assert len(inert) >= 40 and set(default_safe_globals("inert")) == set(inert)
    dangerous = load_pack().rules["IC401"]["dangerous"]
    from fnmatch import fnmatchcase

    for name, why in inert.items():
        assert isinstance(why, str) and len(why) > 10, name
        assert not any(c in name for c in "*?[") and "." in name, name
        assert not any(fnmatchcase(name, p) for p in dangerous), name
        assert not name.startswith(("builtins.type", "builtins.getattr", "builtins.object", "copyreg.")), name


def test_typing_any_cannot_be_called_into_anything():
    """typing.Any is inert because calling it raises: the scanner's trust is checked against Python."""
    with pytest.raises(TypeError):
        typing.Any("touch x")


# --- 3. formats by content -----------------------------------------------------------------------

def _state():
    return {k: v.contiguous() for k, v in _classifier().state_dict().items()}


@pytest.mark.parametrize("name", ["resnet.pth.tar", "model.tar", "weights.pkl", "net.model", "net.weights", "checkpoint"])
def test_checkpoint_names_do_not_matter_zip(cli, tmp_path, name):
    torch.save(_state(), tmp_path / name)
    r, out = _run(cli, tmp_path / name)
    assert r.exit_code == 0 and out["target"]["tensors"] == 8 and _row(out, name)["reader"] == "initcheck"


def test_legacy_pickle_named_pth_tar_is_read(cli, tmp_path):
    torch.save({"state_dict": _state(), "epoch": 90, "arch": "mlp"}, tmp_path / "model_best.pth.tar",
               _use_new_zipfile_serialization=False)
    r, out = _run(cli, tmp_path / "model_best.pth.tar")
    assert r.exit_code == 0 and out["target"]["tensors"] == 8


@pytest.mark.parametrize("name", ["model.weights", "model", "model.bin"])
def test_safetensors_under_another_name_is_read(cli, tmp_path, name):
    save_file(_state(), tmp_path / name)
    r, out = _run(cli, tmp_path / name)
    assert r.exit_code == 0 and out["target"]["tensors"] == 8 and _row(out, name)["format"] == "safetensors"


def test_a_real_tar_is_still_refused_whatever_its_name(cli, tmp_path):
    torch.save(_state(), tmp_path / "inner.pt")
    with tarfile.open(tmp_path / "model.pth.tar", "w") as t:
        t.add(tmp_path / "inner.pt", arcname="storages")
    r = cli(tmp_path / "model.pth.tar", "--no-probe")
    assert r.exit_code == 2 and "tar archive" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [b"\x0a\x08sentencepiece protobuf", b"hello world\n", b""], ids=["protobuf", "text", "empty"])
def test_a_file_that_is_no_checkpoint_is_one_line_exit_2(cli, tmp_path, content):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(content)
    r = cli(path, "--no-probe")
    assert r.exit_code == 2 and "not a checkpoint" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --- the torch.load fallback is bounded before it runs --------------------------------------------

def test_fallback_refuses_storages_over_the_pack_limit_before_torch_load(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("INITCHECK_NO_TORCH_LOAD", raising=False)
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(256, 256)}, buf)  # 256 KiB of zeros
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as z:
        for n in src.namelist():
            z.writestr(n, src.read(n))
    pack = tmp_path / "pack.toml"
    pack.write_text("[scan]\ntorch_load_max_bytes = 65536\n")
    called = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: called.append(a))
    r = cli(tmp_path / "deflated.pt", "--no-probe", "--rules", pack)
    assert r.exit_code == 2 and "torch_load_max_bytes (65536)" in r.stderr and not called, r.stderr


# --- the placeholder reader is bounded -----------------------------------------------------------

def test_self_referencing_and_shared_modules_are_read_once(tmp_path):
    from initcheck.loader import open_checkpoint

    model = _classifier()
    expected = list(model.state_dict())
    model.encoder.back = model  # a cycle: the root module is a child of its own child
    model.shared = model.encoder  # the same module twice: its tensors named under their first path
    torch.save({"model": model}, tmp_path / "cyc.pt")
    ckpt = open_checkpoint(tmp_path / "cyc.pt")
    assert [e.name for e in ckpt.entries] == expected
    ckpt.close()


def test_a_deep_chain_of_placeholder_objects_is_refused_in_bounded_work(cli, tmp_path):
    # 150 objects of an unknown class, each the state of the one before: over the walk's depth bound
    body = b"\x80\x02" + (_global("evil", "Node") + b")\x81}" + _str("child")) * 150 + b"N" + b"sb" * 150 + b"."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", body)
    (tmp_path / "deep.pt").write_bytes(buf.getvalue())
    r, out = _run(cli, tmp_path / "deep.pt")
    (f,) = _rules(out, "IC401")
    assert r.exit_code == 1 and "evil.Node" in f["value"] and "not loaded" in f["message"]
    assert "nested too deeply" in f["message"]
    assert _row(out, "deep.pt")["verdict"] == "refused"


def test_a_list_of_state_dicts_is_read_by_index(tmp_path):
    """An ensemble saved as a list of state dicts (areafluforecast's checkpoints): every member read."""
    from initcheck.loader import open_checkpoint

    members = [_classifier().state_dict() for _ in range(2)]
    torch.save({"format": "ensemble-1", "config": {"lr": 3e-3}, "member_state_dicts": members}, tmp_path / "ens.pt")
    ckpt = open_checkpoint(tmp_path / "ens.pt")
    assert [e.name for e in ckpt.entries] == [f"member_state_dicts.{i}.{k}" for i in range(2) for k in members[0]]
    ckpt.close()


class _ParamByClass:
    """Pickles as a call of torch.nn.parameter.Parameter itself (allowlisted by torch, unknown to our reader)."""

    def __reduce__(self):
        return (nn.parameter.Parameter, (torch.ones(2, 2),))


def test_torch_tensor_classes_are_never_placeholders(tmp_path, monkeypatch):
    """A placeholder would hide the tensor inside it: torch's own tensor classes go to torch.load."""
    from initcheck.errors import InputError
    from initcheck.loader import open_checkpoint

    torch.save({"w": _ParamByClass()}, tmp_path / "p.pt")
    monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", "1")
    with pytest.raises(InputError, match="global torch.nn.parameter.Parameter.*fallback is off"):
        open_checkpoint(tmp_path / "p.pt")
    monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", "0")
    ckpt = open_checkpoint(tmp_path / "p.pt")
    assert ckpt.readers["p.pt"].reader == "torch.load" and [e.name for e in ckpt.entries] == ["w"]
    ckpt.close()
