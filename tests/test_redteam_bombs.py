"""Issue 22 item 7 (part): sizes read from config.json are bounded against the weights present before
any model is built. num_labels: 3000000 took 6.3 GB and 83 s on a plain run; vocab_size: 30000000 4.2 GB.
Now the task model is not built (IC300 says why, with the numbers) and the static checks still report."""

import json

import pytest
import torch
from conftest import bert_config, measured_run


def _folder(tmp_path, cls, **edit):
    import transformers

    folder = tmp_path / cls
    torch.manual_seed(0)
    getattr(transformers, cls)(bert_config(**({"num_labels": 3} if "Sequence" in cls else {}))).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    for k in ("id2label", "label2id"):
        cfg.pop(k, None) if "num_labels" in edit else None
    cfg.update(edit)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_three_million_labels_build_nothing(tmp_path):
    """The reproduction, as a process: its peak memory is measured."""
    code, out, err, took, peak_mb = measured_run(_folder(tmp_path, "BertForSequenceClassification", num_labels=3000000),
                                                 "--format", "json")
    assert code in (0, 1), err
    msgs = [f["message"] for f in json.loads(out)["findings"] if f["rule"] == "IC300"]
    assert msgs and "labels x hidden matrix of 3,000,000 x 32" in msgs[0] and "config_max_param_ratio" in msgs[0], msgs
    assert took < 60 and peak_mb < 1024, (took, peak_mb)


@pytest.mark.parametrize("cls, edit, options, claim", [
    # a plain run (the probe on by default) builds the task model config.json names
    ("BertForMaskedLM", {"vocab_size": 30000000}, {"probe": None}, "vocab_size x hidden matrix of 30,000,000 x 32"),
    ("BertModel", {}, {"task": "sequence-classification", "num_labels": 20000000}, "labels x hidden matrix of 20,000,000 x 32"),
])
def test_vocab_and_label_flags_are_bounded_too(tmp_path, cls, edit, options, claim):
    from initcheck import check

    report = check(_folder(tmp_path, cls, **edit), **{"probe": False, **options})
    msgs = [f.message for f in report.findings if f.rule == "IC300"]
    assert msgs and claim in msgs[0], msgs


def test_ordinary_head_sizes_build_the_task_model(tmp_path):
    from initcheck import check

    report = check(_folder(tmp_path, "BertModel"), task="sequence-classification", num_labels=1000, probe=False)
    assert report.scan.load_report["status"] == "ran"
    assert not [f for f in report.findings if f.rule == "IC300"]
