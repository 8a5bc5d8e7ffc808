"""Renderers that cannot crash (issue 14): every format renders whatever the findings and the probe
trace hold (NaN, Inf, None, empty lists, one step, hostile strings, huge numbers), and the exit
code depends only on the findings."""

import json
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initcheck.findings import RANK, Finding
from initcheck.report import FORMATS, render

HOSTILE = ["<script>alert(1)</script>", "]]></x>", "|`*_[x](y)", "$\\frac{1}{0}$", "\x00\x1b[31m", "{{ d }}", "%s%n",
           "ü\u202e\ufeff", "a" * 300, "", " ", "nan", "inf", "-inf", "[bold]x[/]", "\\", "\n\n"]
text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30))
weird = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**40, 10**40),
                  st.just(1e308), st.just(-0.0), text, st.just([]), st.just({}), st.booleans())
loss = st.lists(weird, max_size=25) | st.lists(weird, min_size=1, max_size=1)   # one step, or none, or many

finding = st.builds(Finding, rule=st.sampled_from(["IC101", "IC102", "IC105", "IC302", "IC999"]), name=text,
                    severity=st.sampled_from(["error", "warning", "info"]), param=st.one_of(st.none(), text),
                    message=text, value=weird, expected=weird, hint=st.one_of(st.just(""), text),
                    origin=st.one_of(st.none(), st.sampled_from(["head", "new", "pretrained"]), text),
                    file=st.one_of(st.none(), text), suppressed=st.booleans(), reason=st.one_of(st.none(), text),
                    baselined=st.booleans())
grad = st.fixed_dictionaries({"layers": st.lists(text, max_size=6),
                              "values": st.lists(st.lists(weird, max_size=6), max_size=8)}) | st.none() | st.just({})
probe = st.one_of(st.none(), st.fixed_dictionaries(
    {"status": st.sampled_from(["ran", "skipped"]), "loss": loss, "steps": weird, "grad_norm": grad,
     "spikes": st.lists(weird, max_size=4), "expected_initial_loss": weird, "num_classes": weird,
     "reason": st.one_of(st.none(), text), "lr": weird, "dead_params": st.lists(text, max_size=4),
     "activations": st.dictionaries(text, st.fixed_dictionaries({"kind": weird, "dead_fraction": weird}), max_size=3),
     "update_ratio": st.dictionaries(text, weird, max_size=3), "head_modules": st.lists(text, max_size=2),
     "first_nonfinite": st.one_of(st.none(), st.fixed_dictionaries({"step": weird, "module": text, "what": text})),
     "model_class": st.one_of(st.none(), text)}))


@lru_cache(maxsize=1)
def _base(tmp="/tmp/initcheck-props-model"):
    """A real Report of a tiny real checkpoint, built once (hypothesis reruns the test body)."""
    import torch
    import transformers

    import initcheck
    from conftest import roberta_config, save

    torch.manual_seed(0)
    return initcheck.check(save(transformers.RobertaForSequenceClassification(roberta_config(num_labels=3)), tmp),
                           probe=False, hashes=True)


def _expected_exit(findings, fail_on) -> int:
    return int(any(f.active and RANK[f.severity] >= RANK[fail_on] for f in findings))


@pytest.mark.report_unchecked   # hostile findings and traces, made up to disagree with the report
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(findings=st.lists(finding, max_size=6), trace=probe, fail_on=st.sampled_from(["error", "warning", "info", "never"]),
       tensor=st.fixed_dictionaries({"std": weird, "zero_fraction": weird, "dup_rows": weird, "name": text}))
def test_every_format_renders_and_the_exit_code_depends_only_on_findings(findings, trace, fail_on, tensor):
    report = _base()
    report.findings, report.settings.fail_on = findings, fail_on
    report.scan.probe = trace
    assert report.exit_code == _expected_exit(findings, fail_on)
    data = report.to_dict()
    # a hostile row in the per-layer plot too, flagged when a finding names it
    data["tensors"] = data["tensors"] + [{"name": tensor["name"] or "x", "role": "linear", "origin": "head",
                                          "std": tensor["std"], "zero_fraction": tensor["zero_fraction"],
                                          "dup_rows": tensor["dup_rows"], "shape": [2, 2]}]
    for fmt in FORMATS:
        out = render(fmt, data)
        assert isinstance(out, str) and out, fmt
        if fmt in ("json", "sarif"):
            json.loads(out)   # strict JSON: no NaN/Infinity literals
    assert report.exit_code == _expected_exit(findings, fail_on)   # rendering changed nothing


def test_json_never_writes_nan_or_infinity():
    data = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": {"d": 10**40}}
    out = json.loads(render("json", data))
    assert out == {"a": "nan", "b": ["inf", "-inf", 1.5], "c": {"d": 10**40}}


@pytest.fixture(autouse=True, scope="module")
def _restore():
    yield
    _base.cache_clear()
