"""Stop a fine-tune whose custom head cannot learn, before the first optimizer step.

Runs offline in a few seconds: a tiny BERT built from a config (in real use, from_pretrained),
a custom two-layer head, and a transformers Trainer with InitCheckCallback attached.

Needs the ``trainer`` extra (transformers' Trainer needs accelerate):

    pip install "initcheck[trainer]"

    python examples/train_with_callback.py           # zero head: stopped, exit 1
    python examples/train_with_callback.py --fixed   # proper init: trains, exit 0

Exit 3 means a dependency is missing (not a finding): install the extra and run it again.
The callback reads the project config ([tool.initcheck] or initcheck.toml) like the CLI does.
"""

import sys

MISSING_DEPENDENCY = 3   # distinct from 1, "initcheck stopped the run"

try:
    import accelerate  # noqa: F401 - Trainer imports it lazily and fails mid-run without it
    import torch
    from torch import nn
    from transformers import BertConfig, BertModel, Trainer, TrainingArguments

    from initcheck.integrations import InitCheckCallback, InitCheckFailed
except ImportError as e:
    print(f"train_with_callback: missing dependency: {e}; install it with: pip install \"initcheck[trainer]\"",
          file=sys.stderr)
    sys.exit(MISSING_DEPENDENCY)


class Classifier(nn.Module):
    def __init__(self, backbone, num_labels=2, zero_head=True):
        super().__init__()
        self.bert = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, num_labels))
        init = nn.init.zeros_ if zero_head else (lambda w: nn.init.normal_(w, std=backbone.config.initializer_range))
        for layer in (self.head[0], self.head[2]):
            init(layer.weight)      # the bug: zeros_ where normal_ was meant
            nn.init.zeros_(layer.bias)

    def forward(self, input_ids, attention_mask=None, labels=None):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        logits = self.head(h)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def main(fixed: bool) -> int:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = Classifier(BertModel(config, add_pooling_layer=False), zero_head=not fixed)
    ids = torch.randint(1, 200, (16, 12))
    data = [{"input_ids": ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": i % 2} for i in range(16)]
    args = TrainingArguments(output_dir="initcheck-example-out", max_steps=4, per_device_train_batch_size=8,
                             report_to=[], use_cpu=True, save_strategy="no", remove_unused_columns=False)
    callback = InitCheckCallback(
        fail_on="error",                    # "warning" for a stricter gate
        report_path="initcheck-report.json",  # .html / .sarif / .md work too
        # any initcheck.check option: rules="strict", suppress=[{"rule": ..., "param": ..., "reason": ...}], ...
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    try:
        trainer.train()
    except InitCheckFailed as e:
        print(e, file=sys.stderr)
        return 1
    print(f"trained {trainer.state.global_step} steps; initcheck report in initcheck-report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main("--fixed" in sys.argv))
