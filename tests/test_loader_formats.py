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
