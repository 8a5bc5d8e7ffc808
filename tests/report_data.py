"""Inputs for the reporter tests: a hostile real checkpoint, a hand-made probe trace, a big report.

HOSTILE is a real tensor name (safetensors accepts it); the checkpoint makes it all-NaN so that it
also shows up as a finding, next to the demo's zero-initialised RoBERTa head.
"""

from pathlib import Path

HOSTILE = "<script>alert(1)</script>"
HOSTILE_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ZERO_HEAD = ("classifier.dense.weight", "classifier.out_proj.weight")


def hostile_checkpoint(folder) -> Path:
    """Tiny real RobertaForSequenceClassification: zero two-layer head plus an all-NaN tensor named HOSTILE."""
    import torch
    import transformers
    from conftest import edit_tensors, roberta_config, save

    torch.manual_seed(0)
    folder = save(transformers.RobertaForSequenceClassification(roberta_config(num_labels=3)), Path(folder))

    def plant(sd):
        sd["classifier.dense.weight"].zero_()
        sd["classifier.out_proj.weight"].zero_()
        sd[HOSTILE] = torch.full((4, 4), float("nan"))

    return edit_tensors(folder, plant)


def report_data(folder, **options) -> dict:
    import initcheck

    options = {"probe": False, "hashes": True, "command": "initcheck model --format html", **options}
    return initcheck.check(folder, **options).to_dict()


def probe_trace(steps=12, layers=("roberta.embeddings", "roberta.encoder.layer.0", "roberta.encoder.layer.1",
                                  "classifier", HOSTILE)) -> dict:
    """A hand-made trace following the probe contract, non-finite values in every spelling."""
    loss = [1.0986 - 0.02 * i for i in range(steps)]
    loss[5], loss[9], loss[10] = 3.5, "nan", None
    values = [[0.5 / (1 + j) + 0.01 * i for j in range(len(layers))] for i in range(steps)]
    values[3][1], values[4][2], values[6][0] = "inf", None, 0.0
    return {"status": "ran", "reason": None, "task": "sequence-classification",
            "model_class": "RobertaForSequenceClassification", "device": "cpu", "train": "all",
            "data": "synthetic", "steps": steps, "lr": 5e-5, "batch_size": 8, "seq_len": 32, "seed": 0,
            "seconds": 1.25, "num_classes": 3, "expected_initial_loss": 1.0986, "loss": loss, "spikes": [5],
            "grad_norm": {"layers": list(layers), "values": values},
            "dead_params": ["classifier.dense.weight", HOSTILE],
            "activations": {"roberta.encoder.layer.0.intermediate": {"kind": "gelu", "dead_fraction": 0.01,
                                                                     "saturated_fraction": 0.0},
                            HOSTILE: {"kind": "relu", "dead_fraction": 1.0, "saturated_fraction": "nan"}},
            "update_ratio": {"classifier": 0.001, HOSTILE: "inf"},
            "first_nonfinite": {"step": 9, "module": HOSTILE, "what": "loss"}}


def big_data(n_tensors=1000, layers=None) -> dict:
    """A synthetic report dict shaped like Report.to_dict() for a transformer with n_tensors tensors."""
    per_block = ("attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight",
                 "attention.self.value.weight", "attention.output.dense.weight", "attention.output.LayerNorm.weight",
                 "intermediate.dense.weight", "output.dense.weight", "output.LayerNorm.weight", "output.dense.bias")
    tensors, i = [], 0
    while len(tensors) < n_tensors:
        block, leaf = divmod(i, len(per_block))
        name = f"model.encoder.layer.{block}.{per_block[leaf]}"
        role = "linear" if name.endswith("weight") and "LayerNorm" not in name else (
            "norm-gain" if "LayerNorm" in name else "bias")
        row = {"name": name, "shape": [64, 64] if role == "linear" else [64], "dtype": "float32", "role": role,
               "origin": "pretrained", "file": f"model-0000{block % 3 + 1}-of-00003.safetensors",
               "block": f"model.encoder.layer.{block}", "layer": block, "mean": 0.0,
               "std": 0.02 + 0.001 * (block % 7), "absmax": 0.1, "zero_fraction": 0.0, "nonfinite": 0, "dup_rows": 0}
        if role == "linear":
            row.update(expected_std_low=0.02, expected_std_high=0.02)
        tensors.append(row)
        i += 1
    tensors[7]["std"], tensors[7]["zero_fraction"] = 0.0, 1.0
    tensors[16]["dup_rows"] = 12
    findings = [{"rule": "IC102", "name": "all-zero-weights", "severity": "error", "param": tensors[7]["name"],
                 "message": "all zero", "value": 0.0, "expected": "non-zero init", "hint": "initialise it",
                 "origin": "pretrained", "file": tensors[7]["file"], "suppressed": False, "reason": None,
                 "baselined": False},
                {"rule": "IC104", "name": "symmetric-neurons", "severity": "warning", "param": tensors[16]["name"],
                 "message": "12 duplicate rows", "value": 12, "expected": 0, "hint": "", "origin": "pretrained",
                 "file": tensors[16]["file"], "suppressed": True, "reason": "known, tied on purpose", "baselined": False}]
    return {"schema": "initcheck/1",
            "tool": {"name": "initcheck", "version": "0.1.0", "torch": "2", "transformers": "5", "safetensors": "0.8"},
            "created": "2026-01-01T00:00:00+00:00", "command": "initcheck big/", "verdict": "fail", "fail_on": "error",
            "summary": {"error": 1, "warning": 0, "info": 0, "suppressed": 1, "baselined": 0},
            "target": {"path": "/models/big", "files": [{"path": f"model-0000{k}-of-00003.safetensors", "size": 10 ** 9,
                                                         "format": "safetensors", "sha256": "ab" * 32} for k in (1, 2, 3)],
                       "architecture": "BertModel", "model_type": "bert", "parameters": 123456789,
                       "tensors": len(tensors), "dtypes": {"float32": 123456789}, "config": {"model_type": "bert"}},
            "new": {"new": [], "adapter": [], "resized": [], "pretrained": len(tensors)}, "load_report": None,
            "findings": findings,
            "rules": [{"id": "IC102", "name": "all-zero-weights", "severity": "error", "summary": "zero", "why": "",
                       "fix": "", "doc": "zero", "options": {"allow": ["*lora_B*"]}},
                      {"id": "IC104", "name": "symmetric-neurons", "severity": "error", "summary": "dup", "why": "",
                       "fix": "", "doc": "dup", "options": {}}],
            "pack": {"name": "default", "sources": ["rules/default.toml"]}, "probe": None, "tensors": tensors}
