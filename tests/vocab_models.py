"""Tiny real chat models for the tokenizer checks (IC70x): a byte-level BPE tokenizer trained here with
the ``tokenizers`` library, special tokens added after its vocabulary as Llama 3 and Qwen2 add theirs,
a chat template in tokenizer_config.json, and a LlamaForCausalLM whose chosen rows are set tiny
(reserved rows a base never trained) before it is saved.
"""

import json
from pathlib import Path

import torch

from conftest import llama_config

CORPUS = [
    "You are a helpful assistant.", "What is the capital of France?", "The capital of France is Paris.",
    "And of Italy?", "Rome is the capital of Italy.", "system user assistant", "hello world, how are you today?",
    "the quick brown fox jumps over the lazy dog", "training a model on a chat format",
] * 20

# the real Llama 3 Instruct template (tokenizer_config.json of Meta-Llama-3-8B-Instruct)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Qwen2's ChatML template
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                   *[f"<|reserved_special_token_{i}|>" for i in range(10)]]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>"]
HEADER_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
BPE_SIZE = 300


def write_tokenizer(folder: Path, specials: list, config: dict, bpe_size: int = BPE_SIZE) -> dict:
    """tokenizer.json (a byte-level BPE trained on CORPUS, ``specials`` added after it) and tokenizer_config.json
    (``config``: the ``*_token`` entries, ``chat_template``). Returns ``{token: id}`` of the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=bpe_size, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(specials)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", **config}))
    return {s: tok.token_to_id(s) for s in specials}


def llama3_chat(folder: Path, tiny=(), rows=None, pad=None, eos="<|eot_id|>", template=LLAMA3_TEMPLATE, seed=0) -> dict:
    """A Llama-3-like chat model: the specials' rows named in ``tiny`` are set to 1e-4 x normal in the
    embedding and the untied LM head (a base that never trained them). Returns the special ids."""
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": eos, "chat_template": template}
    if pad:
        cfg["pad_token"] = pad
    ids = write_tokenizer(folder, LLAMA3_SPECIALS, cfg)
    n_ids = max(ids.values()) + 1
    save_llama(folder, rows or 64 * -(-n_ids // 64), [ids[t] for t in tiny], seed=seed,
               bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids[eos])
    return ids


def save_llama(folder: Path, rows: int, tiny_ids: list, seed=0, **config):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(vocab_size=rows, tie_word_embeddings=False, **config))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            for i in tiny_ids:
                w[i] = 1e-4 * torch.randn(w.shape[1], generator=g)
    model.save_pretrained(folder)
    return model


def mean_initialise(folder: Path, ids: list):
    """Set the rows ``ids`` of the embedding and the LM head to the mean of the other rows (the fix)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(folder / "model.safetensors")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        w = sd[key]
        keep = torch.ones(w.shape[0], dtype=torch.bool)
        keep[ids] = False
        w[ids] = w[keep].mean(0)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
