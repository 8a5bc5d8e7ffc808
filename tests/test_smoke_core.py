import json

from conftest import bert_config, findings_of


def test_zero_two_layer_head_fails_naming_both(cli, roberta_zero_head):
    r = cli(roberta_zero_head, "--format", "json", "--no-probe")
    assert r.exit_code == 1
    errors = {f["param"] for f in findings_of(r.stdout) if f["severity"] == "error"}
    assert {"classifier.dense.weight", "classifier.out_proj.weight"} <= errors


def test_fresh_bert_classifier_passes(cli, make_model):
    folder = make_model("BertForSequenceClassification", bert_config(num_labels=3))
    r = cli(folder, "--format", "json", "--no-probe")
    data = json.loads(r.stdout)
    assert [f for f in data["findings"] if f["severity"] == "error"] == []
    assert r.exit_code == 0 and data["verdict"] == "pass"
