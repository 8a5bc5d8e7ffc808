"""The incident, end to end: a vision-language scorer whose new two-layer head was initialised to zero,
saved the way vendors save it, ``initcheck fix``-ed, then trained by transformers' ``Trainer``, then the
training run checked by initcheck's post-mortem.

The model is a tiny real Gemma 3 (SigLIP vision tower + Gemma 3 text model, ``Gemma3Model`` built from a
``Gemma3Config``, vision pooling head off as in the released Gemma 3 configs) inside the vendor's own
``nn.Module`` with ``score_head = Linear(h, 256) -> ReLU -> Linear(256, 3)``, saved as one state dict
(``safetensors.torch.save_model``) beside the backbone's ``config.json`` (layout (a) of
``vendor_layouts``). The task is learnable: the label is the band of the text's token ids, an image rides
in every prompt. Both runs are real 30-step Trainer runs on CPU:

- unfixed: the zero head passes no gradient to itself or below: the loss stays at ln 3, the post-mortem
  finds the head still zero (IC602) and the head and backbone never moved (IC601);
- fixed: the head gets PyTorch's init for its Linear layers; the loss leaves ln 3 within the run, every
  tensor moves, and the post-mortem has no error.
"""

import json
import math

import pytest
import test_families_probe as F
import torch
import transformers as T
from safetensors.torch import load_file, save_model
from torch import nn

CLASSES, STEPS, IMAGE_TOKENS = 3, 30, 4
LN_C = math.log(CLASSES)


def gemma3_config():
    cfg = F.gemma3()
    cfg.vision_config.vision_use_head = False   # as google/gemma-3-*: the tower's pooling head is not used
    return cfg


class Scorer(nn.Module):
    """The vendor's wrapper: a VLM backbone and a new scoring head on the last token's hidden state."""

    def __init__(self, config):
        super().__init__()
        self.vlm = T.Gemma3Model(config)
        h = config.text_config.hidden_size
        self.score_head = nn.Sequential(nn.Linear(h, 256), nn.ReLU(), nn.Linear(256, CLASSES))

    def forward(self, input_ids, pixel_values, labels=None):
        hidden = self.vlm(input_ids=input_ids, pixel_values=pixel_values).last_hidden_state[:, -1]
        logits = self.score_head(hidden)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


class Prompts(torch.utils.data.Dataset):
    """<boi> 4 image tokens <eoi>, then 8 text tokens from a band of 35 ids per label; a random image each."""

    def __init__(self, config, n=256, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % CLASSES
        text = 5 + self.labels[:, None] * 35 + torch.randint(0, 35, (n, 8), generator=g)
        image = [config.boi_token_index] + [config.image_token_index] * IMAGE_TOKENS + [config.eoi_token_index]
        self.ids = torch.cat([torch.tensor(image).expand(n, -1), text], 1)
        self.pixels = torch.randn(n, 3, 32, 32, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "pixel_values": self.pixels[i], "labels": self.labels[i]}


def vendor_checkpoint(folder, config):
    """The pretrained backbone in the wrapper, the head zeroed, saved as the vendor does (layout (a))."""
    torch.manual_seed(0)
    scorer = Scorer(config)
    F._pretrained_projector(scorer.vlm)
    with torch.no_grad():
        for p in scorer.score_head.parameters():
            p.zero_()
    folder.mkdir()
    save_model(scorer, str(folder / "model.safetensors"))
    config.save_pretrained(folder)
    return folder


def train(out, start, config):
    """30 real Trainer steps from the checkpoint in ``start``, a checkpoint every 10 steps."""
    model = Scorer(config)
    model.load_state_dict(load_file(start / "model.safetensors"), strict=True)
    args = T.TrainingArguments(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=16, learning_rate=2e-3,
                               logging_steps=1, save_steps=10, report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
                               dataloader_num_workers=0, save_only_model=True, warmup_steps=0)
    T.Trainer(model=model, args=args, train_dataset=Prompts(config)).train()
    return out


def post_mortem(cli, run):
    r = cli(run, "--format", "json")
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, json.loads(r.stdout)


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    """``(src, dst, fix output, unfixed run, fixed run)``, made once for the module."""
    from click.testing import CliRunner

    from initcheck.cli import main

    root = tmp_path_factory.mktemp("incident")
    config = gemma3_config()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: one thread is faster than two on a shared machine
    try:
        src = vendor_checkpoint(root / "scorer", config)
        fixed = CliRunner().invoke(main, ["fix", str(src), "-o", str(root / "scorer-fixed")], catch_exceptions=False)
        unfixed_run = train(root / "run-unfixed", src, config)
        fixed_run = train(root / "run-fixed", root / "scorer-fixed", config)
    finally:
        torch.set_num_threads(threads)
    return src, root / "scorer-fixed", fixed, unfixed_run, fixed_run


def test_fix_reinitialises_the_zero_head_and_nothing_else(incident):
    src, dst, fixed, _, _ = incident
    assert fixed.exit_code == 0, fixed.output
    assert "IC102" in fixed.output and "proof: PASS" in fixed.output
    log = json.loads((dst / "initcheck-fix.json").read_text())
    assert {f["rule"] for f in log["before"]["findings"] if f["severity"] == "error"} == {"IC102"}
    changed = sorted(n for s in log["steps"] for n in s["names"])
    assert changed == ["score_head.0.bias", "score_head.0.weight", "score_head.2.bias", "score_head.2.weight"]
    a, b = load_file(src / "model.safetensors"), load_file(dst / "model.safetensors")
    assert a.keys() == b.keys()
    assert sorted(k for k in a if not torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8))) == changed
    assert log["after"]["errors"] == 0 and log["proof"]["passed"]


def test_unfixed_run_stays_at_ln_c_and_its_head_never_moves(cli, incident):
    _, _, _, run, _ = incident
    code, data = post_mortem(cli, run)
    assert code == 1
    loss = data["run"]["log"]["train"]["loss"]
    assert len(loss) == STEPS and all(abs(x - LN_C) < 0.02 * LN_C for x in loss)   # flat at ln 3 = 1.0986
    assert {f["param"] for f in data["findings"] if f["rule"] == "IC602"} == {"score_head.0.weight",
                                                                             "score_head.2.weight"}
    still = {f["param"] for f in data["findings"] if f["rule"] == "IC601"}
    assert "score_head.0" in still and any(p.startswith("vlm") for p in still)   # no gradient reaches the VLM
    moved = {m["name"]: m["changed_fraction"] for m in data["run"]["movement"]}
    assert moved["score_head.2.bias"] > 0 and moved["score_head.0.weight"] == 0 == moved["score_head.2.weight"]


def test_fixed_run_leaves_ln_c_and_every_tensor_moves(cli, incident):
    _, _, _, _, run = incident
    code, data = post_mortem(cli, run)
    assert code == 0, [f["message"] for f in data["findings"] if f["severity"] == "error"]
    loss = data["run"]["log"]["train"]["loss"]
    assert abs(loss[0] - LN_C) < 0.1 * LN_C   # PyTorch's init: small logits, the loss starts at ln 3 ...
    assert max(loss[-5:]) < 0.5 * LN_C        # ... and leaves it
    assert not [f for f in data["findings"] if f["rule"] in ("IC601", "IC602", "IC612")]
    moved = {m["name"]: m["changed_fraction"] for m in data["run"]["movement"]}
    assert all(moved[f"score_head.{i}.{p}"] > 0.9 for i in (0, 2) for p in ("weight", "bias"))
    assert all(v > 0 for v in moved.values())
