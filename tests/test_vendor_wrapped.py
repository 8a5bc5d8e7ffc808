"""Issue 30, layouts (a) and (b): a vendor's wrapper around a transformers backbone, saved as one
state dict with the backbone's config.json (a) or as ``torch.save(state_dict)`` with none (b).

The backbone is found inside the wrapper's keys (``vlm.``, ``backbone.``, ``encoder.``, ``model.``)
and judged with its own conventions; the ``score_head`` beside it is the head. For six families,
three head inits, with and without ``--base``: a zero two-layer head is an error at both
``score_head`` weights, x50 at least a warning there, He-initialised clean.
"""

import pytest
import torch

import initcheck
import vendor_layouts as V

FAMILIES = list(V.FAMILIES)
HEAD = ("score_head.0.weight", "score_head.2.weight")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each (family, init, layout) built once per module: ``built(family, init, layout) -> (target, base)``."""
    root = tmp_path_factory.mktemp("vendor")
    cache = {}

    def get(family, init, layout):
        if (family, init, layout) not in cache:
            cache[(family, init, layout)] = V.build(root, family, init, layout)
        return cache[(family, init, layout)]

    return get


def loud(report):
    return [f for f in report.findings if f.severity in ("error", "warning")]


def checks(built, family, init, layout):
    """The report without and with ``--base``."""
    target, base = built(family, init, layout)
    return [initcheck.check(target, probe=False), initcheck.check(target, probe=False, base=base)]


@pytest.mark.parametrize("layout", ["a", "b"])
@pytest.mark.parametrize("family", FAMILIES)
def test_zero_two_layer_head_is_an_error_at_both_head_weights_and_nothing_else(built, family, layout):
    for report in checks(built, family, "zero", layout):
        errors = {(f.rule, f.param) for f in report.findings if f.severity == "error"}
        assert errors == {("IC102", HEAD[0]), ("IC102", HEAD[1])}, [f.message for f in loud(report)]
        assert all(f.param.startswith("score_head.") for f in loud(report)), [f.message for f in loud(report)]


@pytest.mark.parametrize("layout", ["a", "b"])
@pytest.mark.parametrize("family", FAMILIES)
def test_x50_head_is_flagged_at_the_head_and_the_backbone_stays_silent(built, family, layout):
    for report in checks(built, family, "x50", layout):
        flagged = {f.param for f in loud(report)}
        assert set(HEAD) <= flagged, [f.message for f in loud(report)]
        assert all(p.startswith("score_head.") for p in flagged), [f.message for f in loud(report)]
        ratio = [f for f in loud(report) if f.param == HEAD[0]][0]
        assert "x above" in ratio.message   # measured against the band of the inits a vendor uses


@pytest.mark.parametrize("layout", ["a", "b"])
@pytest.mark.parametrize("family", FAMILIES)
def test_he_head_is_clean_and_the_backbone_is_found_under_the_wrappers_prefix(built, family, layout):
    attr = V.FAMILIES[family][2]
    for report in checks(built, family, "he", layout):
        assert loud(report) == [], [f.message for f in loud(report)]
        found = report.to_dict()["new"]["backbone"]
        assert found["prefix"] == attr + "." and found["unmatched"] == 0, found
        heads = {h["name"]: h["found"] for h in report.to_dict()["new"]["heads"]}
        assert set(heads) == {f"score_head.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
        assert all(f"at '{attr}.'" in how for how in heads.values()), heads


def test_gemma3_without_config_keeps_its_1_plus_w_norms_silent_and_says_where_it_found_the_model(built, cli):
    target, _ = built("gemma3", "he", "b")
    report = initcheck.check(target, probe=False)
    found = report.to_dict()["new"]["backbone"]
    assert (found["model_class"], found["source"]) == ("Gemma3ForConditionalGeneration", "key names")
    gains = [r for r in report.scan.records if r.role == "norm-gain" and ".language_model." in r.name]
    assert gains and all(r.extra.get("gain_offset") == 1.0 for r in gains)
    vision = [r for r in report.scan.records if r.role == "norm-gain" and ".vision_tower." in r.name]
    assert vision and not any(r.extra.get("gain_offset") for r in vision)   # SigLIP's LayerNorms hold 1
    out = cli(target, "--no-probe")
    assert "backbone: Gemma3ForConditionalGeneration under 'vlm.' (79 tensors, from key names)" in out.stdout


def test_base_pairs_in_memory_names_with_saved_names_so_pretrained_tensors_are_not_rejudged(built):
    target, base = built("qwen2_vl", "he", "b")
    report = initcheck.check(target, probe=False, base=base)
    facts = report.scan.facts["base"]
    assert (facts["matched_by"], facts["prefix"], facts["unmatched"]) == ("model keys", "vlm.", [])
    emb = report.scan.by_name["vlm.model.language_model.embed_tokens.weight"]
    assert (emb.origin, emb.origin_detail) == ("pretrained", "identical to --base")
    assert [r.name for r in report.scan.records if r.origin != "pretrained"] == [
        f"score_head.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]


def test_base_that_matches_no_key_is_exit_2_naming_both_prefixes(built, cli):
    target, _ = built("wav2vec2", "he", "b")
    _, other = built("gemma3", "he", "b")
    out = cli(target, "--no-probe", "--base", other)
    assert out.exit_code == 2
    line = out.stderr.strip() or out.stdout.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert "no tensor matches --base" in line and "'encoder.'" in line and "'language_model.'" in line, line


def test_base_partly_matched_is_ic212_naming_the_unmatched_part(built, tmp_path, cli):
    target, base = built("llava", "he", "b")
    state = torch.load(target / "scorer.pt", weights_only=True)
    text_only = {k: v for k, v in state.items() if ".vision_tower." not in k}   # the vendor dropped the tower
    torch.save(text_only, tmp_path / "scorer.pt")
    out = cli(tmp_path / "scorer.pt", "--no-probe", "--base", base, "--format", "json")
    import json

    data = json.loads(out.stdout)
    partial = [f for f in data["findings"] if f["rule"] == "IC212"]
    assert len(partial) == 1 and partial[0]["severity"] == "warning", data["findings"]
    assert "39 of 64 --base tensors" in partial[0]["message"] and ": vision_tower.* (39)" in partial[0]["message"]
    # the healthy look-alike: the whole backbone saved
    whole = initcheck.check(target, probe=False, base=base)
    assert not [f for f in whole.findings if f.rule == "IC212"]


def test_unidentified_wrapper_says_so_once_and_zero_gains_of_unknown_convention_are_one_warning(built, tmp_path):
    model, _ = V.backbone("gemma3")
    # a backbone no model type's key names fit: nothing tells that its zero norm gains compute 1 + w
    state = {"vlm." + k.replace("self_attn", "attn").replace("language_model", "lm_core"): v
             for k, v in model.state_dict().items()}
    head = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    state |= {"score_head." + k: v for k, v in head.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    report = initcheck.check(tmp_path / "w.pt", probe=False)
    ic214 = [f for f in report.findings if f.rule == "IC214"]
    assert sorted(f.severity for f in ic214) == ["info", "warning"], [f.message for f in ic214]
    assert any("14 norm gains are stored as all zeros" in f.message for f in ic214), [f.message for f in ic214]
    assert not [f for f in report.findings if f.rule == "IC102"]
    # the look-alike: a lone dead norm among healthy siblings is still IC102's error, and a
    # wrapper whose backbone is found gets no IC214
    bert, _ = V.backbone("bert")
    state = {"model." + k: v for k, v in bert.state_dict().items()}
    state["model.encoder.layer.1.output.LayerNorm.weight"] = torch.zeros(32)
    state |= {"score_head." + k: v for k, v in head.state_dict().items()}
    torch.save(state, tmp_path / "b.pt")
    report = initcheck.check(tmp_path / "b.pt", probe=False)
    assert [(f.rule, f.param) for f in loud(report)] == [("IC102", "model.encoder.layer.1.output.LayerNorm.weight")]
    assert not [f for f in report.findings if f.rule == "IC214"]


def test_base_keeps_a_transformers_head_at_x50_an_error_against_its_initializer_range(tmp_path):
    import test_families_probe as F
    from initcheck import hf

    base, ft = F.base_and_finetune(tmp_path, F.vit(), "ViTModel", "ViTForImageClassification", "vit")
    with hf.quiet_transformers():
        model = F.T.ViTForImageClassification.from_pretrained(ft)
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    model.save_pretrained(tmp_path / "x50")
    for b in (None, base):
        [f] = [f for f in initcheck.check(tmp_path / "x50", probe=False, base=b).findings if f.param == "classifier.weight"]
        assert (f.rule, f.severity) == ("IC105", "error") and "initializer_range=0.02): 5" in f.message, f.message


@pytest.mark.parametrize("family, cls, loaded", [
    ("vit", "ViTForImageClassification", 40),          # transformers 5 renames ViT's keys on load
    ("qwen2_vl", "Qwen2VLForConditionalGeneration", 58),   # and moves a VLM's language model under model.
    ("gemma3", "Gemma3ForConditionalGeneration", 79),      # lm_head tied to the embedding, stored once
])
def test_every_loaded_tensor_is_verified_against_the_disk_through_key_renames(tmp_path, family, cls, loaded):
    import test_families_probe as F

    make, bcls, _ = V.FAMILIES[family] if family != "vit" else (F.vit, "ViTModel", None)
    _, ft = F.base_and_finetune(tmp_path, make(), bcls, cls, family)
    report = initcheck.check(ft, probe=True, probe_steps=1)
    rep = report.scan.load_report
    tied = 1 if family == "gemma3" else 0
    assert (rep["loaded"], rep["verified"], rep["reinitialised"]) == (loaded, loaded - tied, [])
    assert rep["not_verified"] == (["1 tensor: tied to a verified tensor (stored once)"] if tied else [])


def test_a_wrapper_with_the_backbones_architectures_is_not_loaded_as_that_class(built, tmp_path, cli):
    import json
    import shutil

    target, _ = built("qwen2_vl", "zero", "a")
    folder = tmp_path / "with-arch"
    shutil.copytree(target, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["Qwen2VLForConditionalGeneration"]}))
    out = cli(folder, "--probe-steps", "2", "--format", "json")
    data = json.loads(out.stdout)
    # the vendor's code loads it: no IC201 "backbone not loaded" from a from_pretrained it never does
    assert sorted((f["rule"], f["param"]) for f in data["findings"] if f["severity"] != "info") == [
        ("IC102", HEAD[0]), ("IC102", HEAD[1])]
    assert data["new"]["backbone"]["source"] == "config.json" and data["load_report"] is None


@pytest.mark.parametrize("name", ["gemma", "llama"])
def test_decoders_sharing_key_names_leave_the_norm_convention_unknown_never_guessed(tmp_path, name):
    import test_families_probe as F
    import transformers

    cls, config = {"gemma": ("GemmaModel", transformers.GemmaConfig(**F.LM, head_dim=8)),
                   "llama": ("LlamaModel", transformers.LlamaConfig(**F.LM))}[name]
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    state = {"backbone." + k: v for k, v in getattr(transformers, cls)(config).state_dict().items()}
    torch.save(state | {"score_head." + k: v for k, v in head.state_dict().items()}, tmp_path / "w.pt")
    report = initcheck.check(tmp_path / "w.pt", probe=False)
    assert {"gemma", "llama"} <= set(report.to_dict()["new"]["backbone"]["ambiguous"])
    got = sorted((f.rule, f.severity) for f in report.findings)
    if name == "gemma":   # Gemma's zero-centred gains: one warning that names the ambiguity, no IC102
        assert got == [("IC214", "info"), ("IC214", "warning")], [f.message for f in report.findings]
    else:                 # Llama's gains are ones: nothing ambiguous to report but the tie
        assert got == [("IC214", "info")], [f.message for f in report.findings]
