"""Issue 30, layout (c): the backbone saved with ``save_pretrained`` and the vendor's head beside it
in a file ``from_pretrained`` never opens (``score_head.pt``, ``head.safetensors``, ``classifier.bin``).

Every weight file in the folder is judged (its tensors named ``FILE:KEY``), or its row says why not;
a head file whose first layer takes the backbone's hidden size is judged as a head.
"""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import initcheck
import vendor_layouts as V

HEAD = ("score_head.pt:0.weight", "score_head.pt:2.weight")


def _active(report, *severities):
    return [f for f in report.findings if f.severity in severities and not f.suppressed and not f.baselined]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``(family, init) -> (target, base)``, each built once for the module."""
    root = tmp_path_factory.mktemp("split")
    cache = {}

    def get(family, init):
        if (family, init) not in cache:
            cache[family, init] = V.build(root, family, init, "c")
        return cache[family, init]

    return get


@pytest.mark.parametrize("with_base", [False, True], ids=["alone", "base"])
@pytest.mark.parametrize("init", ["zero", "he", "x50"])
@pytest.mark.parametrize("family", list(V.FAMILIES))
def test_layout_c_head_file_judged(built, family, init, with_base):
    target, base = built(family, init)
    report = initcheck.check(target, probe=False, base=base if with_base else None)
    errors, warnings = _active(report, "error"), _active(report, "warning")
    if init == "zero":
        assert {(f.rule, f.param) for f in errors} == {("IC102", n) for n in HEAD}, [f.message for f in errors]
        assert not report.passed   # exit 1
    elif init == "x50":
        flagged = {f.param for f in errors + warnings}
        assert flagged and flagged <= set(HEAD), [f.message for f in errors + warnings]
        assert all(f.rule == "IC105" and "separate head file score_head.pt" in f.message for f in errors + warnings)
    else:
        assert errors == [] and warnings == [], [f.message for f in errors + warnings]
        assert report.passed
    heads = {h["name"]: h for h in report.to_dict()["new"]["heads"]}
    assert heads[HEAD[0]]["origin"] == "head" and "input width 32 = backbone hidden size" in heads[HEAD[0]]["found"]


def test_cli_exit_codes_and_file_table(cli, built, tmp_path):
    zero, _ = built("bert", "zero")
    res = cli(zero, "--no-probe", "-o", tmp_path / "r.html", "--format", "json")
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    row = {f["path"]: f for f in data["target"]["files"]}["score_head.pt"]
    assert row["kind"] == "weights" and row["verdict"] == "loaded" and "separate head file" in row["note"]
    html = (tmp_path / "r.html").read_text()
    assert "separate head file, input width 32" in html
    he, _ = built("bert", "he")
    assert cli(he, "--no-probe").exit_code == 0


def test_head_glob_matching_nothing_is_one_line_exit_2(cli, built):
    zero, _ = built("vit", "zero")
    res = cli(zero, "--no-probe", "--head", "scorehead.*")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert lines[0].startswith("initcheck: error: --head 'scorehead.*' matches no tensor; nearest: score_head.pt:")


def test_head_glob_names_side_file_tensors(built):
    zero, _ = built("vit", "zero")
    report = initcheck.check(zero, probe=False, heads=["score_head.pt:*"])
    tensors = {t["name"]: t for t in report.to_dict()["tensors"]}
    assert tensors["score_head.pt:0.weight"]["origin"] == "new"   # --head wins over the file's relation
    assert {f.param for f in _active(report, "error")} == set(HEAD)


def _bert_base(tmp_path):
    folder = V.save_base(tmp_path, "bert")
    out = tmp_path / "model"
    shutil.copytree(folder, out)
    return out


def _two_layer(init: str, width: int = 32) -> dict:
    torch.manual_seed(2)
    head = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 1))
    V._init_head(head, init)
    return {k: v.contiguous() for k, v in head.state_dict().items()}


@pytest.mark.parametrize("init", ["zero", "he", "x50"])
def test_head_safetensors_beside_the_model(tmp_path, init):
    folder = _bert_base(tmp_path)
    save_file(_two_layer(init), str(folder / "head.safetensors"))
    report = initcheck.check(folder, probe=False)
    bad = _active(report, "error", "warning")
    if init == "he":
        assert bad == [], [f.message for f in bad]
    else:
        assert {f.param for f in bad} == {"head.safetensors:0.weight", "head.safetensors:2.weight"}
        assert all(f.severity == "error" for f in bad)


def test_broken_side_files(cli, tmp_path):
    """A truncated head.safetensors is bad input (exit 2, one line); a pickle that holds no state dict
    (a calibration dict) is not weights: its row says why it was not judged, never "clean"."""
    folder = _bert_base(tmp_path)
    torch.save({"threshold": 0.5, "classes": ["good", "bad"]}, folder / "calibration.pt")
    rows = {f["path"]: f for f in initcheck.check(folder, probe=False).to_dict()["target"]["files"]}
    assert rows["calibration.pt"]["verdict"] == "not judged" and "holds no tensors" in rows["calibration.pt"]["note"]
    save_file(_two_layer("he"), str(folder / "head.safetensors"))
    raw = (folder / "head.safetensors").read_bytes()
    (folder / "head.safetensors").write_bytes(raw[: len(raw) // 2])
    res = cli(folder, "--no-probe")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith("initcheck: error: head.safetensors: ")


def test_classifier_bin_in_the_legacy_pickle_format(tmp_path):
    folder = _bert_base(tmp_path)
    torch.save(_two_layer("zero"), folder / "classifier.bin", _use_new_zipfile_serialization=False)
    assert (folder / "classifier.bin").read_bytes()[:2] != b"PK"   # not a zip: the legacy format
    report = initcheck.check(folder, probe=False)
    assert {(f.rule, f.param) for f in _active(report, "error")} == {
        ("IC102", "classifier.bin:0.weight"), ("IC102", "classifier.bin:2.weight")}
    row = {f["path"]: f for f in report.to_dict()["target"]["files"]}["classifier.bin"]
    assert row["verdict"] == "loaded" and row["reader"] == "initcheck"


def test_head_pickled_as_a_whole_module(tmp_path):
    """``torch.save(head)`` (the module, not its state dict): its tensors are read by initcheck's own
    reader, never unpickled, and judged; its pickle's imports are IC401's, as for any weight file."""
    folder = _bert_base(tmp_path)
    head = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
    V._init_head(head, "zero")
    torch.save(head, folder / "score_head.pt")
    report = initcheck.check(folder, probe=False)
    errors = {(f.rule, f.param or f.file) for f in _active(report, "error")}
    assert errors == {("IC102", HEAD[0]), ("IC102", HEAD[1]), ("IC401", "score_head.pt")}


def test_head_file_whose_keys_clash_with_the_backbone(tmp_path):
    """The head file reuses the backbone's key ``pooler.dense.weight``: both are judged, apart."""
    folder = _bert_base(tmp_path)
    head = {"pooler.dense.weight": torch.zeros(64, 32), "pooler.dense.bias": torch.zeros(64),
            "pooler.out.weight": torch.zeros(1, 64), "pooler.out.bias": torch.zeros(1)}
    torch.save(head, folder / "score_head.pt")
    report = initcheck.check(folder, probe=False)
    assert {f.param for f in _active(report, "error", "warning")} == {"score_head.pt:pooler.dense.weight",
                                                                       "score_head.pt:pooler.out.weight"}
    names = {t["name"] for t in report.to_dict()["tensors"]}
    assert {"pooler.dense.weight", "score_head.pt:pooler.dense.weight"} <= names


@pytest.mark.parametrize("init", ["he", "x50"])
def test_without_config_the_hidden_size_is_measured(tmp_path, init):
    target, _ = V.build(tmp_path, "bert", init, "c")
    (target / "config.json").unlink()
    report = initcheck.check(target, probe=False)
    heads = {h["name"]: h["found"] for h in report.to_dict()["new"]["heads"]}
    assert "input width 32 = backbone hidden size (measured: the length of most of the backbone's norms)" in heads[HEAD[0]]
    bad = _active(report, "error", "warning")
    assert bad == [] if init == "he" else {f.param for f in bad} == set(HEAD)


def test_file_that_cannot_be_related_is_judged_with_fan_based_inits(tmp_path):
    folder = _bert_base(tmp_path)
    save_file(_two_layer("he", width=48), str(folder / "extra.safetensors"))
    report = initcheck.check(folder, probe=False)
    assert _active(report, "error", "warning") == []
    info = [f for f in report.findings if f.rule == "IC215"]
    assert len(info) == 1 and info[0].message.startswith("extra.safetensors: separate weight file, not related to the backbone")
    assert "extra.safetensors:0.weight" in info[0].message
    save_file(_two_layer("x50", width=48), str(folder / "extra.safetensors"))
    report = initcheck.check(folder, probe=False)
    assert {f.param for f in _active(report, "error")} == {"extra.safetensors:0.weight", "extra.safetensors:2.weight"}


def test_same_weights_in_two_formats_read_once_and_training_state_never(tmp_path):
    folder = _bert_base(tmp_path)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")   # timm folders do this
    model = nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), folder / "optimizer.pt")
    torch.save(torch.get_rng_state(), folder / "rng_state.pth")
    (folder / "checkpoint-10").mkdir()
    save_file(_two_layer("zero"), str(folder / "checkpoint-10" / "model.safetensors"))
    alone = initcheck.check(V.save_base(tmp_path, "bert"), probe=False).to_dict()["target"]["tensors"]
    report = initcheck.check(folder, probe=False)
    data = report.to_dict()
    assert data["target"]["tensors"] == alone and _active(report, "error", "warning") == []
    rows = {f["path"]: f for f in data["target"]["files"]}
    assert rows["pytorch_model.bin"]["verdict"] == "not judged"
    assert "same weights in another format" in rows["pytorch_model.bin"]["note"]
    assert rows["optimizer.pt"]["kind"] == "training state" and rows["rng_state.pth"]["kind"] == "training state"
    assert rows["checkpoint-10/model.safetensors"]["verdict"] == "not judged"
    assert not [r for r in rows.values() if r["kind"] == "weights" and r["verdict"] not in ("loaded", "not judged")]


def test_shards_of_the_same_weights_read_once_an_extra_shard_judged(tmp_path):
    folder = _bert_base(tmp_path)
    sd = load_file(str(folder / "model.safetensors"))
    half = dict(list(sd.items())[: len(sd) // 2])
    torch.save(half, folder / "pytorch_model-00001-of-00002.bin")   # the .bin shards beside safetensors
    extra = {"encoder.layer.5.intermediate.dense.weight": torch.zeros(64, 32), "encoder.layer.5.intermediate.dense.bias": torch.zeros(64)}
    save_file(extra, str(folder / "model-00002-of-00002.safetensors"))   # a shard no index lists
    report = initcheck.check(folder, probe=False)
    rows = {f["path"]: f for f in report.to_dict()["target"]["files"]}
    assert rows["pytorch_model-00001-of-00002.bin"]["verdict"] == "not judged"
    assert rows["model-00002-of-00002.safetensors"]["verdict"] == "loaded"
    name = "model-00002-of-00002.safetensors:encoder.layer.5.intermediate.dense.weight"
    assert [(f.rule, f.param) for f in _active(report, "error", "warning")] == [("IC102", name)]
    (info,) = [f for f in report.findings if f.rule == "IC215"]
    assert "judged as pretrained weights" in info.message and info.file == "model-00002-of-00002.safetensors"


def test_adapter_folder_with_a_head_file_and_a_second_format(tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import BertModel

    base = V.save_base(tmp_path, "bert")
    torch.manual_seed(0)
    model = peft.get_peft_model(BertModel.from_pretrained(base), peft.LoraConfig(r=4, target_modules=["query", "value"]))
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    torch.save(load_file(str(out / "adapter_model.safetensors")), out / "adapter_model.bin")
    torch.save(_two_layer("zero"), out / "score_head.pt")
    report = initcheck.check(out, probe=False, base=base)
    data = report.to_dict()
    rows = {f["path"]: f for f in data["target"]["files"]}
    assert rows["adapter_model.bin"]["verdict"] == "not judged" and rows["score_head.pt"]["verdict"] == "loaded"
    assert {(f.rule, f.param) for f in _active(report, "error", "warning")} == {("IC102", n) for n in HEAD}
    assert data["new"]["adapter"] and all("lora_" in n for n in data["new"]["adapter"])


def test_hub_cache_snapshot_with_a_head_file(tmp_path):
    """The Hugging Face cache layout: every file a symlink into ../../blobs."""
    src = _bert_base(tmp_path)
    torch.save(_two_layer("zero"), src / "score_head.pt")
    repo = tmp_path / "hub" / "models--vendor--scorer"
    snap, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir()
    for i, f in enumerate(sorted(src.iterdir())):
        shutil.copy(f, blobs / f"blob{i}")
        os.symlink(f"../../blobs/blob{i}", snap / f.name)
    report = initcheck.check(snap, probe=False)
    assert {f.param for f in _active(report, "error")} == set(HEAD)


def test_demo_split_layout_catches_the_zero_head(cli, tmp_path):
    res = cli("demo", "--layout", "split", "-o", tmp_path / "demo.json")
    assert res.exit_code == 0   # as the default demo: 0 when initcheck caught the planted defects
    assert "in score_head.pt (torch.save)" in res.stdout
    assert "score_head.pt:0.weight [head]" in res.stdout and "score_head.pt:2.weight [head]" in res.stdout
    assert "caught both planted defects" in res.stdout
    assert json.loads((tmp_path / "demo.json").read_text())["verdict"] == "fail"
