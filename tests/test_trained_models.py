"""Trained models judged as trained (issue 29): weight norm in both layouts, pre-norms inside a
Sequential, fixed projections, layers left at PyTorch's default init (IC111), RNN gates against
their siblings, and models too small for a median. Each defect beside its harmless look-alike;
the real checkpoints are in test_real_weights.py."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import packaged_weight
from safetensors.torch import save_file
from torch import nn

from initcheck.tensors import stats as S


def scan(cli, path):
    r = cli(path, "--format", "json", "--no-probe")
    assert r.exit_code in (0, 1), r.output
    data = json.loads(r.stdout)
    loud = [f for f in data["findings"] if f["severity"] != "info"]
    return loud, {t["name"]: t for t in data["tensors"]}


def save(folder, sd):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, folder / "model.safetensors")
    return folder


def trained(module, seed=0, steps=30):
    """Train ``module`` on a fixed random regression batch: real moved weights, not hand-set ones.
    One thread: these layers are too small for more to help on a shared machine."""
    torch.manual_seed(seed)
    x = torch.randn(16, *module.in_shape)
    y = torch.randn(16, module.out_dim)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(module(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return module


# --- weight norm --------------------------------------------------------------------------------

class WnNet(nn.Module):
    """A vocoder-style stack: weight-normed Conv1d layers, in the old or the parametrizations layout."""

    in_shape, out_dim = (8, 16), 4

    def __init__(self, layout):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm if layout == "parametrizations" else nn.utils.weight_norm
        self.convs = nn.ModuleList([wn(nn.Conv1d(8 if i == 0 else 16, 16, 3, padding=1)) for i in range(3)])
        self.post = wn(nn.Conv1d(16, 1, 3, padding=1))
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        for c in self.convs:
            x = torch.tanh(c(x))
        return self.out(self.post(x).squeeze(1))


LAYOUTS = {"weight_norm": ("convs.1.weight_v", "convs.1.weight_g"),
           "parametrizations": ("convs.1.parametrizations.weight.original1", "convs.1.parametrizations.weight.original0")}


@pytest.fixture(scope="module")
def wn_nets():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch deprecates the old weight_norm
        return {layout: trained(WnNet(layout)).state_dict() for layout in LAYOUTS}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_weight_norm_direction_is_the_layers_weight_and_zero_is_an_error(cli, tmp_path, wn_nets, layout):
    sd = wn_nets[layout]
    v, g = LAYOUTS[layout]
    found, tensors = scan(cli, save(tmp_path / "clean", sd))
    assert found == [] and tensors[v]["role"] == "conv" and tensors[g]["role"] != "conv"
    found, _ = scan(cli, save(tmp_path / "zero", dict(sd, **{v: torch.zeros_like(sd[v])})))
    assert [(f["rule"], f["param"], f["severity"]) for f in found] == [("IC102", v, "error")]
    assert "0 / 0" in found[0]["message"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_weight_norm_gain_zero_is_an_error_and_a_small_gain_is_not(cli, tmp_path, wn_nets, layout):
    """g = 0 makes the layer output only its bias; a gain scaled down (not zero) is a trained gain."""
    sd = wn_nets[layout]
    _, g = LAYOUTS[layout]
    found, _ = scan(cli, save(tmp_path / "zero", dict(sd, **{g: torch.zeros_like(sd[g])})))
    assert [(f["rule"], f["param"], f["severity"]) for f in found] == [("IC102", g, "error")]
    assert "outputs only its bias" in found[0]["message"]
    found, _ = scan(cli, save(tmp_path / "small", dict(sd, **{g: sd[g] * 0.01})))
    assert [f for f in found if f["rule"] == "IC102"] == []


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_weight_norm_direction_scaled_is_harmless(cli, tmp_path, wn_nets, layout):
    """g * v / ||v||: v x100 computes the same layer, so nothing is flagged."""
    sd = wn_nets[layout]
    v, _ = LAYOUTS[layout]
    found, _ = scan(cli, save(tmp_path / "v100", dict(sd, **{v: sd[v] * 100})))
    assert found == []


# --- pre-norms inside a Sequential (conformer blocks) -------------------------------------------

class PreNormBlocks(nn.Module):
    in_shape, out_dim = (32,), 4

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 64), nn.SiLU(), nn.Linear(64, 32))
                                     for _ in range(3)])
        self.act = nn.Sequential(nn.PReLU(32), nn.Linear(32, 4))   # a PReLU slope: 1-D weight, no bias

    def forward(self, x):
        for b in self.blocks:
            x = x + b(x)
        return self.act(x)


def test_pre_norm_before_its_layer_is_a_norm_and_its_zero_gain_an_error(cli, tmp_path):
    sd = trained(PreNormBlocks()).state_dict()
    found, tensors = scan(cli, save(tmp_path / "clean", sd))
    assert found == []
    assert tensors["blocks.1.0.weight"]["role"] == "norm-gain" and tensors["blocks.1.0.bias"]["role"] == "norm-bias"
    assert tensors["act.0.weight"]["role"] != "norm-gain"
    found, _ = scan(cli, save(tmp_path / "zero", dict(sd, **{"blocks.1.0.weight": torch.zeros(32)})))
    assert [(f["rule"], f["param"]) for f in found] == [("IC102", "blocks.1.0.weight")]


# --- fixed projections ----------------------------------------------------------------------------

@pytest.mark.parametrize("values,expected", [
    (np.arange(16, dtype=np.float16).astype(np.float32).reshape(1, 16, 1, 1), "arange"),   # YOLO's DFL
    (np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "arange"),
    (np.eye(8, dtype=np.float32).reshape(8, 8, 1), "identity"),
    (np.random.default_rng(0).uniform(-0.25, 0.25, (16, 16)).astype(np.float32), None),
    (np.full((4, 4), 0.5, np.float32), None),    # constant: IC103's, not a projection
])
def test_fixed_projection_is_recognised_from_its_values(values, expected):
    assert S.fixed_pattern(values) == expected


def test_fixed_arange_projection_beside_a_trained_cnn_is_not_judged_for_scale(cli, tmp_path):
    """YOLO's DFL: a [1, 16, 1, 1] conv holding arange(16), 21x the model's median scale."""
    sd = trained(PreNormBlocks()).state_dict()
    sd["dfl.conv.weight"] = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1, 1)
    found, tensors = scan(cli, save(tmp_path / "dfl", sd))
    assert found == []
    sd["dfl.conv.weight"] = torch.randn(1, 16, 1, 1, generator=torch.Generator().manual_seed(0)) * 30
    found, _ = scan(cli, save(tmp_path / "not-dfl", sd))
    assert [f["param"] for f in found] == ["dfl.conv.weight"]


# --- layers at PyTorch's default init (IC111) ----------------------------------------------------

def test_default_init_is_measured_exactly():
    rng = np.random.default_rng(0)
    b = 1 / math.sqrt(256)

    def measured(x):
        st = S.TensorStats(numel=x.size, finite=x.size, mean=float(x.mean()), std=float(x.std()), absmax=float(abs(x).max()))
        return S.at_default_init(st, 256, "float32", 4.0)

    assert measured(rng.uniform(-b, b, (128, 256)))
    assert not measured(rng.normal(0, b / math.sqrt(3), (128, 256)))    # same std, a tail past the bound
    assert not measured(rng.uniform(-b, b, (128, 256)) * 1.05)          # moved 5%
    assert not measured(rng.uniform(-b, b, (128, 256)) * 0.9)


def test_fresh_model_at_default_init_is_silent(cli, tmp_path):
    """Every layer at init: nothing trained, so no layer stands out as untrained."""
    torch.manual_seed(0)
    found, _ = scan(cli, save(tmp_path / "fresh", PreNormBlocks().state_dict()))
    assert found == []


# --- RNN gates against their siblings -------------------------------------------------------------

def _crnn():
    path = packaged_weight("khmer-crnn")
    if path is None:
        pytest.skip("khmer-ocr-ocm (test extra) is not installed")
    return torch.load(path, map_location="cpu", weights_only=True)


def _with_gate(whole, path, names, gate, k):
    sd = dict(whole["model_state_dict"])
    for name in names:
        t = sd[name].clone()
        h = t.shape[0] // 4
        t[gate * h: (gate + 1) * h] *= k
        sd[name] = t
    torch.save({**whole, "model_state_dict": sd}, path)
    return path


def test_input_gate_grown_in_every_layer_and_direction_is_silent(cli, tmp_path):
    """The real CRNN's 2-layer BiLSTM with its input gates 6x larger in every weight, as training
    can move one gate everywhere: 6x the model's median, but level with its siblings."""
    whole = _crnn()
    rnn = [k for k in whole["model_state_dict"] if k.startswith("rnn.weight_")]
    found, _ = scan(cli, _with_gate(whole, tmp_path / "gates.pth", rnn, 0, 6.0))
    assert found == []


def test_one_gate_scaled_in_one_layer_is_flagged_against_its_siblings(cli, tmp_path):
    whole = _crnn()
    found, _ = scan(cli, _with_gate(whole, tmp_path / "gate.pth", ["rnn.weight_hh_l1"], 2, 10.0))
    assert [(f["rule"], f["param"]) for f in found] == [("IC110", "rnn.weight_hh_l1")]
    assert "gate 2" in found[0]["message"] and "layers and directions" in found[0]["message"]


# --- models too small for a median ---------------------------------------------------------------

class Tiny(nn.Module):
    in_shape, out_dim = (1024,), 2

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(1024, 32), nn.Linear(32, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_small_model_weight_far_outside_every_init_band_warns(cli, tmp_path):
    """Two weights: no median. fc1 at N(0, 1) with fan-in 1024 is 22x Kaiming's std: a warning;
    the trained model, and fc1 grown 3x, are silent."""
    sd = trained(Tiny()).state_dict()
    assert scan(cli, save(tmp_path / "clean", sd))[0] == []
    assert scan(cli, save(tmp_path / "x3", dict(sd, **{"fc1.weight": sd["fc1.weight"] * 3})))[0] == []
    normal = torch.randn(32, 1024, generator=torch.Generator().manual_seed(0))
    found, _ = scan(cli, save(tmp_path / "normal", dict(sd, **{"fc1.weight": normal})))
    assert [(f["rule"], f["param"], f["severity"]) for f in found] == [("IC110", "fc1.weight", "warning")]
    assert "too few for a median" in found[0]["message"]
