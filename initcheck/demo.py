"""The built-in demo: a tiny real RoBERTa classifier whose two-layer head was zero-initialised.

No model can be downloaded here, so the demo builds one from a transformers config, saves it
with save_pretrained into a temporary folder, and checks it like any other checkpoint.

``--layout split`` ships the same incident as vendors often do (issue 30, layout (c)): the
backbone saved with ``save_pretrained`` and the vendor's zero head beside it in ``score_head.pt``
(``torch.save(head.state_dict())``), a file ``from_pretrained`` never opens.
"""

import sys
import tempfile
from pathlib import Path

DEFECTS = ("classifier.dense.weight", "classifier.out_proj.weight")
SPLIT_DEFECTS = ("score_head.pt:0.weight", "score_head.pt:2.weight")   # side-file tensors are named FILE:KEY
# what each layout builds, and the line saying so
LAYOUTS = {
    "task": "a tiny RobertaForSequenceClassification with a zero two-layer head",
    "split": "a tiny RobertaModel (save_pretrained) and its zero two-layer head in score_head.pt (torch.save)",
}


def build_demo_checkpoint(folder) -> Path:
    """Write a tiny RobertaForSequenceClassification with an all-zero head into ``folder``."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the demo's output
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=130, num_labels=3)
    model = RobertaForSequenceClassification(config)
    with torch.no_grad():
        # the incident: a vendor's head initialised with zeros instead of the standard init
        model.classifier.dense.weight.zero_()
        model.classifier.out_proj.weight.zero_()
    folder = Path(folder)
    model.save_pretrained(folder)
    return folder


def build_split_checkpoint(folder) -> Path:
    """Write a tiny RobertaModel with ``save_pretrained`` and a zero two-layer head in ``score_head.pt``."""
    import torch
    from torch import nn
    from transformers import RobertaConfig, RobertaModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=130)
    backbone = RobertaModel(config, add_pooling_layer=False)
    # the vendor's scoring head on the backbone's features, zero-initialised
    head = nn.Sequential(nn.Linear(config.hidden_size, 256), nn.ReLU(), nn.Linear(256, 1))
    for p in head.parameters():
        nn.init.zeros_(p)
    folder = Path(folder)
    backbone.save_pretrained(folder)
    torch.save(head.state_dict(), folder / "score_head.pt")
    return folder


def run_demo(output: str, keep: str | None = None, layout: str = "task") -> int:
    from .api import run
    from .config import Settings
    from .report import render

    build = build_split_checkpoint if layout == "split" else build_demo_checkpoint
    defects = SPLIT_DEFECTS if layout == "split" else DEFECTS
    with tempfile.TemporaryDirectory(prefix="initcheck-demo-") as tmp:
        folder = build(keep or tmp)
        # only paths that still exist when the demo ends: the temporary folder is deleted
        where = str(folder) if keep else "a temporary folder (deleted at the end; --keep DIR keeps it)"
        print(f"demo: wrote {LAYOUTS[layout]} to {where}")
        settings = Settings(command="initcheck demo", hashes=True, progress=False)
        report = run(folder, settings)
        data = report.to_dict()
        if not keep:
            data["target"]["path"] = "(temporary demo checkpoint)"
        print(render("text", data, color=sys.stdout.isatty()), end="")
        fmt = "json" if output.endswith(".json") else "html"
        try:
            text = render(fmt, data)
        except ImportError:  # html reporter not available: fall back to JSON
            fmt, output, text = "json", str(Path(output).with_suffix(".json")), render("json", data)
        Path(output).write_text(text, encoding="utf-8")
        print(f"demo: {fmt.upper()} report written to {output}")
    caught = {f.param for f in report.findings if f.severity == "error"}
    missed = [d for d in defects if d not in caught]
    if missed:
        print(f"demo: initcheck missed the planted defects: {', '.join(missed)}")
        return 1
    print("demo: initcheck caught both planted defects (the run above FAILs on purpose)")
    return 0
