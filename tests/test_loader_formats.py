"""Every accepted layout of the same checkpoint gives the same findings."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import findings_of

ZERO_HEAD = {"classifier.dense.weight", "classifier.out_proj.weight"}


def _shard(sd: dict, n: int):
    keys = sorted(sd)
    return [{k: sd[k] for k in keys[i::n]} for i in range(n)]


def _layout(src, dst, kind):
    sd = load_file(src / "model.safetensors")
    dst.mkdir()
    shutil.copy(src / "config.json", dst / "config.json")
    if kind == "safetensors":
        save_file(sd, dst / "model.safetensors")
    elif kind == "sharded-safetensors":
        wm = {}
        for i, part in enumerate(_shard(sd, 3), 1):
            name = f"model-{i:05d}-of-00003.safetensors"
            save_file(part, dst / name)
            wm.update({k: name for k in part})
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    elif kind == "bin":
        torch.save(sd, dst / "pytorch_model.bin")
    elif kind == "sharded-bin":
        wm = {}
        for i, part in enumerate(_shard(sd, 2), 1):
            name = f"pytorch_model-{i:05d}-of-00002.bin"
            torch.save(part, dst / name)
            wm.update({k: name for k in part})
        (dst / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    elif kind == "single-pt":  # a training script's checkpoint: nested under "state_dict"
        torch.save({"state_dict": sd, "epoch": 3}, dst / "ckpt.pt")
        return dst / "ckpt.pt"
    elif kind in ("bf16", "fp16", "fp8"):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}[kind]
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}, dst / "model.safetensors")
    return dst


@pytest.mark.parametrize("kind", ["safetensors", "sharded-safetensors", "bin", "sharded-bin", "single-pt",
                                  "bf16", "fp16", "fp8"])
def test_zero_head_found_in_every_layout(cli, roberta_zero_head, tmp_path, kind):
    target = _layout(roberta_zero_head, tmp_path / kind, kind)
    r = cli(target, "--format", "json", "--no-probe")
    data = json.loads(r.stdout)
    errors = {f["param"] for f in findings_of(r.stdout) if f["severity"] == "error"}
    assert r.exit_code == 1 and errors == ZERO_HEAD, (kind, data["findings"])
    n = len(load_file(roberta_zero_head / "model.safetensors"))
    assert data["target"]["tensors"] == n and data["target"]["architecture"] == "RobertaForSequenceClassification"
    expect_dtype = {"bf16": "bfloat16", "fp16": "float16", "fp8": "float8_e4m3fn"}.get(kind, "float32")
    assert expect_dtype in data["target"]["dtypes"]
    dense = next(t for t in data["tensors"] if t["name"] == "roberta.encoder.layer.0.intermediate.dense.weight")
    assert dense["role"] == "linear" and 0.01 < dense["std"] < 0.03  # decoded correctly in every dtype


# --- training checkpoints: only the model's weights are scanned, the rest is reported -------------

def _trained_with_adam():
    """A real model after one AdamW step, with its optimizer and scheduler."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    model(torch.randn(8, 16)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _deflate(path):
    """The same archive with every record deflated: a layout only torch.load reads (the fallback path)."""
    import zipfile

    src = zipfile.ZipFile(path)
    members = [(n, src.read(n)) for n in src.namelist()]
    src.close()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members:
            z.writestr(n, data)


def _file_row(out, name):
    return next(f for f in out["target"]["files"] if f["path"] == name)


WRAPPERS = {
    "model_state + optimizer + scheduler": lambda m, o, s: {"model_state": m.state_dict(), "optimizer": o.state_dict(),
                                                            "scheduler": s.state_dict(), "epoch": 3},
    "lightning": lambda m, o, s: {"state_dict": m.state_dict(), "optimizer_states": [o.state_dict()],
                                  "lr_schedulers": [s.state_dict()], "epoch": 1, "global_step": 10},
    "deepspeed module": lambda m, o, s: {"module": m.state_dict(), "optimizer": o.state_dict(), "lr_scheduler": s.state_dict()},
    "flat with optimizer next to it": lambda m, o, s: {**m.state_dict(), "opt": o.state_dict(), "sched": s.state_dict()},
}


@pytest.mark.parametrize("reader", ["initcheck", "torch.load"])
@pytest.mark.parametrize("layout", sorted(WRAPPERS))
def test_optimizer_state_is_skipped_and_reported(cli, tmp_path, monkeypatch, layout, reader):
    monkeypatch.setenv("INITCHECK_NO_TORCH_LOAD", "0")
    model, opt, sched = _trained_with_adam()
    path = tmp_path / "ckpt.pt"
    torch.save(WRAPPERS[layout](model, opt, sched), path)
    if reader == "torch.load":
        _deflate(path)
    r = cli(path, "--format", "json", "--no-probe")
    assert r.exit_code in (0, 1), r.stderr
    out = json.loads(r.stdout)
    names = {t["name"] for t in out["tensors"]}
    # the four weights only, under their module names: no moment (exp_avg) or step counter is scanned
    assert names == {"0.weight", "0.bias", "2.weight", "2.bias"}, names
    row = _file_row(out, "ckpt.pt")
    assert row["reader"] == reader and row["verdict"] == "loaded"
    assert "optimizer state of 4 parameter(s): step, exp_avg, exp_avg_sq" in row["note"], row["note"]
    assert "learning-rate scheduler state" in row["note"], row["note"]
    if reader == "torch.load":
        assert "initcheck's reader does not know compressed storage records" in row["note"]
    else:
        assert row["note"].startswith("read by initcheck's own reader")
    # every format gets it as findings too: what was skipped (IC211), which reader ran (IC403)
    found = {f["rule"]: f for f in out["findings"] if f["rule"] in ("IC211", "IC403")}
    assert found["IC211"]["severity"] == "info" and "optimizer state of 4 parameter(s)" in found["IC211"]["message"]
    assert ("IC403" in found) == (reader == "torch.load")


def test_adam_moments_would_be_judged_if_scanned(cli, tmp_path):
    """The skip matters: the same optimizer state saved as a file's weights is read and judged."""
    _, opt, _ = _trained_with_adam()
    moments = {f"{k}.{n}": v for k, st in opt.state_dict()["state"].items() for n, v in st.items() if n != "step"}
    torch.save(moments, tmp_path / "moments.pt")
    out = json.loads(cli(tmp_path / "moments.pt", "--format", "json", "--no-probe").stdout)
    assert {t["name"] for t in out["tensors"]} == set(moments) and len(moments) == 8


@pytest.mark.parametrize("nested", [False, True])
def test_a_module_named_optimizer_is_still_scanned(cli, tmp_path, nested):
    """A plain state dict whose submodule is named ``optimizer`` (or ``scheduler``) is weights, not training state."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(8, 8), "optimizer": torch.nn.Linear(8, 8),
                                 "scheduler": torch.nn.Linear(8, 2)})
    sd = model.state_dict()
    if nested:  # a hand-nested dict: {"encoder": {"weight": ...}, "optimizer": {...}, ...}
        sd = {mod: {k.split(".", 1)[1]: v for k, v in sd.items() if k.startswith(mod + ".")} for mod in model}
    torch.save(sd, tmp_path / "m.pt")
    r = cli(tmp_path / "m.pt", "--format", "json", "--no-probe")
    out = json.loads(r.stdout)
    names = {t["name"] for t in out["tensors"]}
    assert names == {f"{m}.{p}" for m in ("encoder", "optimizer", "scheduler") for p in ("weight", "bias")}, names
    assert "not read as weights" not in _file_row(out, "m.pt")["note"]
    assert not [f for f in out["findings"] if f["rule"] in ("IC211", "IC403")]


def test_a_module_named_model_next_to_other_modules_is_no_wrapper(cli, tmp_path):
    torch.manual_seed(0)
    sd = {"model": {"weight": torch.randn(4, 4)}, "classifier": {"weight": torch.randn(2, 4)}}
    torch.save(sd, tmp_path / "m.pt")
    out = json.loads(cli(tmp_path / "m.pt", "--format", "json", "--no-probe").stdout)
    assert {t["name"] for t in out["tensors"]} == {"model.weight", "classifier.weight"}


def test_skipped_training_state_reaches_the_html_file_table(cli, tmp_path):
    model, opt, _ = _trained_with_adam()
    (tmp_path / "m").mkdir()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 2}, tmp_path / "m" / "ckpt.pt")
    r = cli(tmp_path / "m" / "ckpt.pt", "--no-probe", "-q", "-o", tmp_path / "r.html")
    assert r.exit_code in (0, 1), r.stderr
    html = (tmp_path / "r.html").read_text()
    assert "read by initcheck&#39;s own reader" in html or "read by initcheck's own reader" in html
    assert "optimizer (optimizer state of 4 parameter(s): step, exp_avg, exp_avg_sq)" in html
