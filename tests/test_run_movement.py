"""The movement scan: per-tensor movement against a float64 reference (kernel and numpy paths, every
float dtype, chunk boundaries, NaN), and the movement rules (IC601-IC604) on both sides."""

import pytest
import torch
from conftest import bert_config, edit_tensors

from initcheck.tensors import native
from initcheck.api import check
from initcheck.run import movement as M


def _raw(t: torch.Tensor):
    """Storage as the loader hands it over (bf16 as uint16 bits)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy(), "bfloat16"
    return t.numpy(), {torch.float32: "float32", torch.float16: "float16"}[t.dtype]


def _reference(a: torch.Tensor, b: torch.Tensor) -> dict:
    a64, b64 = a.double(), b.double()
    d = b64 - a64
    fin = torch.isfinite(d)
    return {"max_abs_diff": float(d[fin].abs().max()) if fin.any() else 0.0, "changed": int((d != 0).sum()),
            "norm_before": float(a64[torch.isfinite(a64)].norm()), "norm_diff": float(d[fin].norm()),
            "nonfinite_after": int((~torch.isfinite(b64)).sum())}


@pytest.mark.parametrize("use_kernel", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_movement_matches_float64_reference(monkeypatch, use_kernel, dtype):
    if use_kernel and not native.available():
        pytest.skip("kernels.c not compiled")
    if not use_kernel:
        monkeypatch.setattr(native, "available", lambda: False)
    g = torch.Generator().manual_seed(0)
    n = M.CHUNK * 2 + 12345   # three chunks, the last one partial
    a = (torch.randn(n, generator=g) * 0.02).to(dtype)
    b = a.clone()
    b[100:5000] += (torch.randn(4900, generator=g) * 0.01).to(dtype)
    b[M.CHUNK - 3: M.CHUNK + 3] = 7.0   # straddles a chunk boundary
    b[-1] = float("nan")
    got = M.tensor_movement(*_raw(a), *_raw(b))
    want = _reference(a, b)
    assert got["changed"] == want["changed"] + 0 and got["nonfinite_after"] == 1
    for k in ("max_abs_diff", "norm_before", "norm_diff"):
        assert got[k] == pytest.approx(want[k], rel=1e-5), k


def test_identical_tensors_did_not_move():
    a = torch.randn(1000)
    got = M.tensor_movement(*_raw(a), *_raw(a.clone()))
    assert got["changed"] == 0 and got["max_abs_diff"] == 0.0 and got["norm_diff"] == 0.0


def _bert_cls():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(bert_config(num_labels=3))


def _run(root, edit):
    """checkpoint-10 of a tiny BERT classifier, checkpoint-20 = ``edit(state_dict)`` of it."""
    model = _bert_cls()
    for step in (10, 20):
        model.save_pretrained(root / f"checkpoint-{step}")
    edit_tensors(root / "checkpoint-20", edit)
    return root


def _nudge(sd, skip=()):
    for k, t in sd.items():
        if t.is_floating_point() and not any(k.startswith(s) for s in skip):
            t.add_(1e-3 * torch.randn_like(t))


def _rules(report, prefix="IC60"):
    return sorted((f.rule, f.severity, f.param) for f in report.findings if f.rule.startswith(prefix))


def test_every_tensor_moved_gives_no_movement_finding(tmp_path):
    report = check(_run(tmp_path / "ok", _nudge), probe=False)
    assert _rules(report) == []


def test_a_layer_that_never_moved_is_named_and_allow_silences_it(tmp_path):
    root = _run(tmp_path / "dead", lambda sd: _nudge(sd, skip=("bert.encoder.layer.1.",)))
    found = [f for f in check(root, probe=False).findings if f.rule == "IC601"]
    assert [(f.param, f.severity) for f in found] == [("bert.encoder.layer.1", "error")]
    assert "16 tensor(s)" in found[0].message and "between step 10 and step 20" in found[0].message
    allowed = check(root, probe=False, rules=_pack(tmp_path, '[rules.never-moved]\nallow = ["bert.encoder.layer.1.*"]\n'))
    assert [f for f in allowed.findings if f.rule == "IC601"] == []


def _pack(tmp_path, body):
    p = tmp_path / "pack.toml"
    p.write_text('[pack]\ndescription = "test"\nextends = "default"\n' + body)
    return str(p)


def test_frozen_backbone_is_ic603_not_ic601(tmp_path):
    report = check(_run(tmp_path / "frozen", lambda sd: _nudge(sd, skip=("bert.",))), probe=False)
    assert _rules(report) == [("IC603", "warning", "bert")]
    report = check(tmp_path / "frozen", probe=False, train="heads")
    assert _rules(report) == [("IC603", "info", "bert")]


def test_nothing_moved_at_all(tmp_path):
    report = check(_run(tmp_path / "same", lambda sd: None), probe=False)
    found = [f for f in report.findings if f.rule == "IC601"]
    assert len(found) == 1 and found[0].message.startswith("no tensor changed between step 10 and step 20")


def test_update_larger_than_the_weight_and_nan_weights(tmp_path):
    def blow(sd):
        _nudge(sd)
        sd["bert.encoder.layer.0.attention.self.query.weight"].mul_(6.0)   # moved 5x its own norm
        sd["bert.encoder.layer.0.attention.self.query.bias"].add_(1.0)     # a bias from 0: no scale of its own
    found = [f for f in check(_run(tmp_path / "big", blow), probe=False).findings if f.rule == "IC604"]
    assert [(f.param, f.severity) for f in found] == [("bert.encoder.layer.0.attention.self.query.weight", "warning")]
    assert found[0].value == pytest.approx(5.0, rel=1e-3)

    def nan(sd):
        _nudge(sd)
        sd["bert.pooler.dense.weight"][0, 0] = float("nan")
    found = [f for f in check(_run(tmp_path / "nan", nan), probe=False).findings if f.rule == "IC604"]
    assert [(f.param, f.severity) for f in found] == [("bert.pooler.dense.weight", "error")]


def test_head_still_zero_after_training(tmp_path):
    def zero_head(sd):
        _nudge(sd)
        sd["classifier.weight"].zero_()
    report = check(_run(tmp_path / "z", zero_head), probe=False)
    assert [(f.rule, f.param) for f in report.findings if f.rule == "IC602"] == [("IC602", "classifier.weight")]


def test_base_with_another_prefix_is_compared_by_name(tmp_path):
    """A backbone saved as BertModel (no ``bert.`` prefix) as --base: shared tensors compared, the new head left out."""
    from transformers import BertModel

    torch.manual_seed(0)
    base = BertModel(bert_config(), add_pooling_layer=True)
    base.save_pretrained(tmp_path / "base")
    root = tmp_path / "run"
    cls = _bert_cls()
    cls.bert.load_state_dict(base.state_dict())
    cls.save_pretrained(root / "checkpoint-10")
    edit_tensors(root / "checkpoint-10", lambda sd: _nudge(sd, skip=("bert.encoder.layer.2.",)))
    run = check(root, probe=False, base=str(tmp_path / "base")).to_dict()["run"]
    names = {m["name"] for m in run["movement"]}
    assert "classifier.weight" not in names and "bert.embeddings.word_embeddings.weight" in names
    still = {m["name"] for m in run["movement"] if m["changed_fraction"] == 0}
    assert still == {n for n in names if n.startswith("bert.encoder.layer.2.")}
    assert run["reference"] == {"path": str(tmp_path / "base"), "step": None, "kind": "base"}


def test_movement_threads_give_the_same_result(tmp_path):
    root = _run(tmp_path / "t", _nudge)
    from initcheck.loader import open_checkpoint

    a, b = open_checkpoint(root / "checkpoint-10"), open_checkpoint(root / "checkpoint-20")
    pairs = M.comparable(a, b)
    assert M.movement(a, b, pairs, workers=1) == M.movement(a, b, pairs, workers=2)


def test_a_failing_movement_scan_becomes_a_finding(tmp_path, monkeypatch):
    root = _run(tmp_path / "boom", _nudge)

    def boom(*a, **kw):
        raise RuntimeError("simulated bug")
    monkeypatch.setattr("initcheck.run.measure.movement", boom)
    report = check(root, probe=False)
    notes = [f for f in report.findings if f.rule == "IC600"]
    assert len(notes) == 1 and "movement scan failed: RuntimeError: simulated bug" in notes[0].message
    assert report.to_dict()["run"]["movement"] is None


def test_a_resized_tensor_is_said_not_measured(tmp_path):
    """A tensor whose shape changed between the checkpoints (resized vocabulary) is not compared,
    and the run's notes say so (IC600, info) instead of dropping it silently."""
    def resize(sd):
        _nudge(sd)
        sd["bert.embeddings.word_embeddings.weight"] = torch.cat(
            [sd["bert.embeddings.word_embeddings.weight"], 0.02 * torch.randn(8, sd["bert.embeddings.word_embeddings.weight"].shape[1])])

    said = [f for f in check(_run(tmp_path / "resized", resize), probe=False).findings if f.rule == "IC600"]
    assert len(said) == 1 and said[0].severity == "info"
    assert "1 tensor(s) not in checkpoint-10 with the same shape" in said[0].message
    assert "bert.embeddings.word_embeddings.weight" in said[0].message
    ok = [f for f in check(_run(tmp_path / "same", _nudge), probe=False).findings if f.rule == "IC600"]
    assert ok == []


def test_many_checkpoints_are_measured_on_an_evenly_spaced_subset(tmp_path):
    """Past [scan] run_max_checkpoints the intervals use an evenly spaced subset (first and last
    kept), and a note says so; at or under it every consecutive pair is measured."""
    model = _bert_cls()
    root = tmp_path / "many"
    for step in (10, 20, 30, 40, 50):
        model.save_pretrained(root / f"checkpoint-{step}")
        edit_tensors(root / f"checkpoint-{step}", lambda sd, s=step: [t.add_(s * 1e-4) for t in sd.values() if t.is_floating_point()])
    capped = check(root, probe=False, rules=_pack(tmp_path, "[scan]\nrun_max_checkpoints = 3\n"))
    run = capped.scan.facts["run"]
    assert [(i["from_step"], i["to_step"]) for i in run["intervals"]] == [(10, 30), (30, 50)]
    assert (run["reference"]["step"], run["latest"]["step"]) == (10, 50)
    said = [f for f in capped.findings if f.rule == "IC600"]
    assert len(said) == 1 and "measured on 3 of them" in said[0].message and said[0].severity == "info"
    full = check(root, probe=False).scan.facts["run"]
    assert [(i["from_step"], i["to_step"]) for i in full["intervals"]] == [(10, 20), (20, 30), (30, 40), (40, 50)]
    assert not [f for f in check(root, probe=False).findings if f.rule == "IC600"]
