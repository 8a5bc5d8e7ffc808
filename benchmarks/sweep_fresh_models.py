"""Sweep: initcheck on freshly initialised models of every architecture transformers ships.

A fresh model is the "before a fine-tune" case, so every warning or error found here is a false
alarm. For each model type in transformers' auto mappings (one class per type, task heads first,
the base model for types no head mapping lists) this builds the default config shrunk to tiny
sizes (sub-configs too), seeds torch, instantiates the class, saves it with ``save_pretrained`` to
a folder under /tmp and runs ``initcheck.api.check(folder, probe=False)``.

Models run in a worker process that the parent restarts when one hangs past ``--timeout`` or
kills the process; what could not be built is listed with its reason.

    python benchmarks/sweep_fresh_models.py                    # everything, table to stdout
    python benchmarks/sweep_fresh_models.py --only llama,bert  # some model types
    python benchmarks/sweep_fresh_models.py --json /tmp/sweep.json --budget 1500
"""

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time

MAPPINGS = (  # task heads first: a type is swept once, with the first class found here
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "MODEL_FOR_CTC_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_MAPPING_NAMES",
)

# the common size keys, set wherever a config (or a sub-config) has them
SMALL = {
    "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 512, "head_dim": 16, "image_size": 32, "patch_size": 8,
    "d_model": 64, "d_ff": 128, "d_kv": 16, "num_layers": 4, "num_decoder_layers": 4, "num_heads": 4,
    "encoder_layers": 4, "decoder_layers": 4, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
    "n_embd": 64, "n_layer": 4, "n_head": 4, "n_inner": 128, "n_positions": 512,
    "embed_dim": 64, "ffn_dim": 128, "hidden_dim": 64, "dim": 64,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "moe_intermediate_size": 64, "shared_expert_intermediate_size": 64,
    "max_position_embeddings": 512, "projection_dim": 64, "text_embed_dim": 64,
    "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
    "v_head_dim": 16, "num_channels": 3, "num_blocks": 4,
}
# what to leave at its default when building with every key set fails, tried in this order
KEEP_LADDER = ((), ("vocab_size",), ("vocab_size", "keep_widths"), ("vocab_size", "image_size", "patch_size"),
               ("vocab_size", "image_size", "patch_size", "max_position_embeddings", "n_positions",
                "head_dim", "num_key_value_heads", "dim", "hidden_dim", "embed_dim"))
# per-layer lists that must match num_hidden_layers: dropped so the config rebuilds them
PER_LAYER = ("layer_types", "mlp_only_layers", "sliding_window_pattern_list", "no_rope_layers",
             "attention_chunk_sizes", "block_types")


def _sizes(d: dict, key: str, out: set) -> set:
    """Every value of ``key`` in the config tree ``d`` (the widths cross-config checks compare)."""
    if isinstance(d.get(key), int):
        out.add(d[key])
    for v in d.values():
        if isinstance(v, dict):
            _sizes(v, key, out)
    return out


def _shrink(d: dict, depth: int = 0, keep=(), widths=None) -> dict:
    """The config dict ``d`` with the size keys it has set to SMALL, sub-configs too (not ``keep``).

    Widths that other configs must match (``text_hidden_size``, ``out_hidden_size``,
    ``condition_dim``...) follow the hidden size they equal; per-layer lists and per-layer dicts
    are cut to the first 4 layers; backbone stage selections are dropped (rebuilt by the config).
    """
    if widths is None:
        widths = _sizes(d, "hidden_size", set()) | _sizes(d, "d_model", set())
    layers = next((d[k] for k in ("num_hidden_layers", "num_layers", "n_layer", "num_blocks")
                   if isinstance(d.get(k), int)), None)
    heads = d.get("num_attention_heads")
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and "model_type" in v and depth < 3:
            out[k] = _shrink(v, depth + 1, keep, widths)
        elif k in ("out_features", "out_indices", "stage_names") and k not in keep:
            continue
        elif k == "num_key_value_heads" and isinstance(v, int) and v == heads and k not in keep:
            out[k] = SMALL["num_attention_heads"]  # no grouped-query attention: stays so
        elif k in SMALL and k not in keep and isinstance(v, int) and not isinstance(v, bool):
            # never grow a size (a 32-wide default stays 32), except counts that other sizes divide
            out[k] = SMALL[k] if k in ("num_hidden_layers", "num_layers", "n_layer", "encoder_layers",
                                       "decoder_layers") or v > SMALL[k] else v
        elif (isinstance(v, int) and not isinstance(v, bool) and v in widths and v > 64 and "keep_widths" not in keep
              and (k.endswith("hidden_size") or k.endswith("_dim") or k.endswith("hidden_dim"))):
            out[k] = 64  # a width that must equal a (shrunk) hidden size elsewhere
        elif k == "d_head" and isinstance(v, int) and k not in keep:
            out[k] = 16
        elif isinstance(v, list) and layers and layers > 4 and len(v) == layers and (
                k in PER_LAYER or all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v)):
            out[k] = v[:4]  # a per-layer list (layer_types, mlp_layer_types, per-layer sizes)
        elif (isinstance(v, dict) and layers and layers > 4 and v and all(str(x).isdigit() for x in v)
              and k != "id2label"):   # labels are keyed by index too: cutting them leaves label2id orphaned (IC705)
            out[k] = {x: y for x, y in v.items() if int(x) < 4}  # per-layer overrides keyed by index
        else:
            out[k] = v
    return out


def plan(only=None):
    """[(model_type, class name, mapping)], one per model type, in MAPPINGS order."""
    from transformers.models.auto import modeling_auto

    seen, out = set(), []
    for mapping in MAPPINGS:
        for mtype, cls in getattr(modeling_auto, mapping).items():
            if isinstance(cls, (list, tuple)):
                cls = cls[0]
            if mtype in seen or (only and mtype not in only):
                continue
            seen.add(mtype)
            out.append((mtype, cls, mapping.replace("MODEL_FOR_", "").replace("_MAPPING_NAMES", "")
                        .replace("MODEL_MAPPING_NAMES", "BASE")))
    return out


def _one(mtype: str, cls_name: str) -> dict:
    """Build, save and check one fresh model; the result as a dict (never raises)."""
    import shutil

    import torch
    import transformers
    from transformers import CONFIG_MAPPING

    row = {"type": mtype, "class": cls_name}
    t0 = time.perf_counter()
    model = None
    for keep in KEEP_LADDER:  # special token ids past 512, image sizes a patch grid needs...
        try:
            cfg_cls = CONFIG_MAPPING[mtype]
            cfg = cfg_cls.from_dict(_shrink(cfg_cls().to_dict(), keep=keep))
            cls = getattr(transformers, cls_name)
            torch.manual_seed(0)
            model = cls(cfg)
            model.eval()
            row["kept"] = list(keep)
            break
        except Exception as e:  # a model that cannot be built is listed, not fatal
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}" if str(e).strip() else type(e).__name__
            if "\n" in str(e).strip():  # pydantic-style errors say what failed on a later line
                msg += " | " + " ".join(str(e).strip().splitlines()[1:3])[:200]
            row.setdefault("first_error", msg)
            row.update(status="build", error=msg)
            if time.perf_counter() - t0 > 20:
                break
    if model is None:
        return row
    row.pop("error", None)
    row["params"] = sum(p.numel() for p in model.parameters())
    row["build_s"] = round(time.perf_counter() - t0, 2)
    folder = tempfile.mkdtemp(prefix=f"sweep-{mtype}-", dir="/tmp")
    try:
        try:
            model.save_pretrained(folder)
        except Exception as e:
            row.update(status="save", error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            return row
        del model
        import initcheck.api

        t1 = time.perf_counter()
        try:
            report = initcheck.api.check(folder, probe=False)
        except SystemExit as e:
            row.update(status="check-exit", error=f"SystemExit {e.code}")
            return row
        except Exception as e:
            first = str(e).splitlines()[0][:200] if str(e) else ""
            row.update(status="check-crash", error=f"{type(e).__name__}: {first}")
            return row
        row["check_s"] = round(time.perf_counter() - t1, 2)
        row["tensors"] = len(report.scan.records)
        row["findings"] = [{"rule": f.rule, "severity": f.severity, "name": f.name, "param": f.param,
                            "message": f.message}
                           for f in report.findings if f.active and f.severity in ("error", "warning")]
        row["info"] = sum(1 for f in report.findings if f.active and f.severity == "info")
        row["status"] = "ok"
        return row
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def worker():
    """Read model types from stdin, one ``type<TAB>class`` a line; answer one JSON line each."""
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    for line in sys.stdin:
        mtype, cls = line.rstrip("\n").split("\t")
        try:
            row = _one(mtype, cls)
        except BaseException as e:  # keep the worker alive through anything a model throws
            row = {"type": mtype, "class": cls, "status": "crash", "error": f"{type(e).__name__}: {e}"[:200]}
        sys.__stdout__.write("@@" + json.dumps(row) + "\n")
        sys.__stdout__.flush()


class Worker:
    def __init__(self):
        env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1",
                   OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        self.p = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

    def ask(self, mtype, cls, timeout):
        self.p.stdin.write(f"{mtype}\t{cls}\n")
        self.p.stdin.flush()
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.p.stdout], [], [], left)
            if not ready:
                break
            line = self.p.stdout.readline()
            if not line:
                return {"type": mtype, "class": cls, "status": "died", "error": f"worker exited {self.p.wait()}"}
            if line.startswith("@@"):
                return json.loads(line[2:])
        self.p.kill()
        self.p.wait()
        return {"type": mtype, "class": cls, "status": "timeout", "error": f"over {timeout:.0f} s"}

    def close(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=10)


def table(rows) -> str:
    lines = []
    bad = [r for r in rows if r.get("status") == "ok" and r["findings"]]
    clean = [r for r in rows if r.get("status") == "ok" and not r["findings"]]
    lines.append(f"{len(rows)} model types: {len(clean)} clean, {len(bad)} with findings, "
                 f"{len(rows) - len(clean) - len(bad)} not checked")
    lines.append(f"\n{'architecture':48} {'#tensors':>8}  findings (rule, tensor, message)")
    for r in sorted(rows, key=lambda r: r["class"]):
        if r.get("status") != "ok":
            continue
        fs = r["findings"]
        lines.append(f"{r['class']:48} {r['tensors']:>8}  {'-' if not fs else ''}")
        for f in fs:
            lines.append(f"    {f['rule']} {f['severity']:7} {f.get('param')}: {f['message'][:220]}")
    lines.append("\nnot checked:")
    for r in sorted(rows, key=lambda r: r["class"]):
        if r.get("status") != "ok":
            lines.append(f"  {r['class']:48} {r['status']:11} {r.get('first_error') or r.get('error', '')}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated model types")
    ap.add_argument("--timeout", type=float, default=90, help="seconds per model (build + save + check)")
    ap.add_argument("--budget", type=float, default=1500, help="seconds for the whole sweep")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    if args.worker:
        return worker()
    todo = plan(set(args.only.split(",")) if args.only else None)
    rows, w, start = [], Worker(), time.monotonic()
    for i, (mtype, cls, mapping) in enumerate(todo):
        if time.monotonic() - start > args.budget:
            rows += [{"type": t, "class": c, "status": "budget", "error": "sweep budget spent"} for t, c, _ in todo[i:]]
            break
        row = w.ask(mtype, cls, args.timeout)
        row["mapping"] = mapping
        rows.append(row)
        n = len(row.get("findings") or [])
        print(f"[{i + 1}/{len(todo)} {time.monotonic() - start:5.0f}s] {cls}: {row['status']}"
              f"{f' {n} finding(s)' if n else ''} {row.get('error', '')}", file=sys.stderr, flush=True)
        if row["status"] in ("timeout", "died"):
            w = Worker()
        if args.json:  # written as it goes, so an interrupted sweep keeps what it measured
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    w.close()
    print(table(rows))


if __name__ == "__main__":
    main()
