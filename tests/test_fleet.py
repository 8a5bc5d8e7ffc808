"""initcheck fleet (issue 27) on the local process pool: 14 members of several families, clean and
defective, a run folder, an unreadable file and a hostile pickle; each member's verdict equals a
real single ``initcheck check``; a member whose process is SIGKILLed fails alone; resume; sources.

tests/test_fleet_ray.py runs the same members on a local Ray cluster."""

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    bert_config,
    edit_tensors,
    gpt2_config,
    llama_config,
    roberta_config,
    run_process,
    save,
)
from safetensors.torch import save_file
from test_run_log import FALLING, _rows, bert_run

from initcheck.fleet.options import member_argv
from initcheck.fleet.sources import expand

MEMBER_OPTS = ["--no-probe"]   # the static path: a fleet of 14 checks in seconds on two cores


class _Shell:
    """Unpickling this runs a shell command; the fleet's member must refuse it like the check does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _model(cls_name, config, folder, seed=0, edit=None):
    import transformers

    torch.manual_seed(seed)
    save(getattr(transformers, cls_name)(config), folder)
    if edit is not None:
        edit_tensors(folder, edit)
    return folder


def _vit(**kw):
    from transformers import ViTConfig

    return ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, num_labels=3, **kw)


def _run_folder(root: Path) -> Path:
    """A Trainer output folder: checkpoint-10 and checkpoint-20 of a tiny BERT, every tensor moved, a log."""
    return bert_run(root, _rows(FALLING))


def _zero(*names):
    return lambda sd: [sd[n].zero_() for n in names]


def _nan(name):
    def edit(sd):
        sd[name][0, 0] = float("nan")
    return edit


def build_members(root: Path, marker: Path) -> list:
    """The fleet of the issue's test: several families, clean and defective, a run folder, an
    unreadable file and a hostile pickle. Returns their paths in order."""
    root.mkdir(parents=True, exist_ok=True)
    out = [
        _model("BertForSequenceClassification", bert_config(num_labels=3), root / "bert-clean"),
        _model("RobertaForSequenceClassification", roberta_config(num_labels=3), root / "roberta-zero-head",
               edit=_zero("classifier.dense.weight", "classifier.out_proj.weight")),
        _model("RobertaForSequenceClassification", roberta_config(num_labels=3), root / "roberta-clean", seed=1),
        _model("GPT2LMHeadModel", gpt2_config(), root / "gpt2-clean"),
        _model("GPT2LMHeadModel", gpt2_config(), root / "gpt2-nan", edit=_nan("transformer.h.0.attn.c_attn.weight")),
        _model("LlamaForCausalLM", llama_config(), root / "llama-clean"),
        _model("LlamaForCausalLM", llama_config(), root / "llama-zero-qproj",
               edit=_zero("model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight")),
        _model("ViTForImageClassification", _vit(), root / "vit-clean"),
        _model("ViTForImageClassification", _vit(), root / "vit-scaled-head",
               edit=lambda sd: sd["classifier.weight"].mul_(50)),
        _model("BertForTokenClassification", bert_config(num_labels=5), root / "bert-token-clean", seed=2),
        _run_folder(root / "run-bert"),
    ]
    torch.manual_seed(3)
    from transformers import BertModel

    sd = {k: v.contiguous() for k, v in BertModel(bert_config()).state_dict().items()}
    save_file(sd, root / "bare-bert.safetensors", metadata={"format": "pt"})   # a lone file
    out.append(root / "bare-bert.safetensors")
    (root / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")   # unreadable
    out.append(root / "truncated.safetensors")
    torch.save({"weight": torch.zeros(2, 2), "payload": _Shell(marker)}, root / "evil.pt")   # hostile pickle
    out.append(root / "evil.pt")
    return out


def single_check(target, opts=MEMBER_OPTS) -> dict:
    """A real ``initcheck check`` of one member alone: exit code, verdict, findings, error line."""
    r = run_process("check", target, *opts, "--format", "json", "-q")
    if r.returncode == 2:
        line = [x for x in r.stderr.splitlines() if x.startswith("initcheck: error: ")][-1]
        return {"exit_code": 2, "verdict": "error", "reason": "error: " + line[len("initcheck: error: "):]}
    data = json.loads(r.stdout)
    return {"exit_code": r.returncode, "verdict": data["verdict"],
            "findings": sorted((f["rule"], f.get("param") or "", f["severity"]) for f in data["findings"])}


def assert_same_as_alone(out_dir: Path, singles: dict):
    """Every member's fleet row and report agree with its single run."""
    rows = {r["target"]: r for r in map(json.loads, (out_dir / "fleet.jsonl").read_text().splitlines())}
    for target, alone in singles.items():
        row = rows[target]
        assert (row["verdict"], row["exit_code"]) == (alone["verdict"], alone["exit_code"]), target
        if alone["exit_code"] == 2:
            assert row["reason"] == alone["reason"]
            assert row["report"] is None
        else:
            data = json.loads((out_dir / row["report"]).read_text())
            assert sorted((f["rule"], f.get("param") or "", f["severity"]) for f in data["findings"]) == alone["findings"]
            assert row["counts"]["error"] == sum(1 for f in alone["findings"] if f[2] == "error")
    return rows


_BUILT = {}   # tests/test_fleet_ray.py imports the fixture: a second registration, the same members


@pytest.fixture(scope="session")
def fleet_dir(tmp_path_factory):
    """The members, built once per session (tests/test_fleet_ray.py checks the same ones)."""
    if _BUILT:
        yield _BUILT
        return
    root = tmp_path_factory.mktemp("fleet")
    marker = root / "PWNED-marker"
    members = build_members(root / "members", marker)
    crash = shutil.copytree(members[0], root / "members" / "crash-me")   # its process is SIGKILLed every attempt
    t = time.monotonic()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:   # real processes, two at a time (this machine's cores)
        singles = dict(zip(map(str, members), pool.map(single_check, members)))
    took = time.monotonic() - t
    print(f"\n{len(members)} single initcheck check runs: {took:.1f} s")
    _BUILT.update({"root": root, "members": members, "crash": crash, "singles": singles, "marker": marker})
    yield _BUILT
    assert not marker.exists(), "a member's pickle ran a shell command"


def test_the_singles_mix_every_outcome(fleet_dir):
    """The fleet under test is the issue's: passes, failures, exit-2 members, a run folder."""
    s = fleet_dir["singles"]
    verdicts = {Path(k).name: v["verdict"] for k, v in s.items()}
    assert verdicts["bert-clean"] == verdicts["gpt2-clean"] == verdicts["llama-clean"] == "pass"
    assert verdicts["roberta-zero-head"] == verdicts["gpt2-nan"] == verdicts["vit-scaled-head"] == "fail"
    assert verdicts["truncated.safetensors"] == "error"
    assert verdicts["evil.pt"] in ("fail", "error")
    assert len(s) >= 12 and sum(v == "pass" for v in verdicts.values()) >= 4
    assert sum(v == "fail" for v in verdicts.values()) >= 3


@pytest.fixture(scope="module")
def pool_run(fleet_dir):
    """The fleet of every member plus one whose check process is SIGKILLed on every attempt, on the pool."""
    from click.testing import CliRunner

    from initcheck.cli import main

    out = fleet_dir["root"] / "out-pool"
    os.environ["INITCHECK_FLEET_FAULT"] = "kill:crash-*"
    try:
        t = time.monotonic()
        r = CliRunner().invoke(main, ["fleet", *map(str, fleet_dir["members"]), str(fleet_dir["crash"]), "-o", str(out),
                                      "--jobs", "2", "--sarif", *MEMBER_OPTS], catch_exceptions=False)
        print(f"pool fleet of {len(fleet_dir['members']) + 1}: {time.monotonic() - t:.1f} s")
    finally:
        del os.environ["INITCHECK_FLEET_FAULT"]
    return out, r


def test_pool_verdicts_equal_single_runs_and_a_killed_member_fails_alone(fleet_dir, pool_run):
    out, r = pool_run
    rows = assert_same_as_alone(out, fleet_dir["singles"])
    crashed = rows[str(fleet_dir["crash"])]
    assert crashed["verdict"] == "failed" and crashed["attempts"] == 2
    assert "SIGKILL" in crashed["reason"]
    assert r.exit_code == 2   # the worst member's: an exit-2 member and a failed one
    assert re.search(r"fleet: 15 member\(s\): \d+ pass, \d+ fail, 1 error, 1 failed; 15 checked", r.stderr)
    assert re.search(r"fleet: \d+/15 done, 1 failed, ETA \d+:\d\d: FAILED .*crash-me", r.stderr)
    # fleet.jsonl: a line per member, in the order given, with the weight files' sha256
    lines = (out / "fleet.jsonl").read_text().splitlines()
    assert [json.loads(x)["target"] for x in lines] == [str(m) for m in fleet_dir["members"]] + [str(fleet_dir["crash"])]
    import hashlib

    bert = rows[str(fleet_dir["members"][0])]
    assert bert["sha256"] == {"model.safetensors": hashlib.sha256(
        (fleet_dir["members"][0] / "model.safetensors").read_bytes()).hexdigest()}
    assert rows[str(fleet_dir["members"][10])]["kind"] == "run"
    # the merged SARIF: a run per member; a member that could not be checked is a failed invocation
    sarif = json.loads((out / "fleet.sarif").read_text())
    assert len(sarif["runs"]) == 15
    failed = [x for x in sarif["runs"] if not x["invocations"][0]["executionSuccessful"]]
    assert len(failed) == sum(1 for row in rows.values() if not row["report"]) >= 2
    fails = sum(len(x["results"]) for x in sarif["runs"])
    assert fails == sum(len(json.loads((out / row["report"]).read_text())["findings"]) for row in rows.values() if row["report"])


def test_index_html_lists_every_member_and_needs_no_network(pool_run):
    out, _ = pool_run
    html = (out / "index.html").read_text()
    rows = [json.loads(x) for x in (out / "fleet.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["label"] in html
        if row["report"]:
            assert f'href="{row["report"]}"' in html and (out / row["report"]).is_file()
    assert html.count("<tr>") == len(rows) + 1
    assert not re.search(r'(src|href)="(https?:)?//', html)   # self-contained
    assert "<svg" in html and "IC102" in html   # the findings-by-rule chart
    assert html.count('class="v failed"') == 2   # the chip and the crashed member


def test_a_member_killed_once_passes_on_its_retry(tmp_path, cli, monkeypatch):
    a = _model("BertForSequenceClassification", bert_config(num_labels=2), tmp_path / "flaky-bert")
    b = _model("GPT2LMHeadModel", gpt2_config(), tmp_path / "gpt2")
    monkeypatch.setenv("INITCHECK_FLEET_FAULT", "kill-once:flaky-*")
    r = cli("fleet", a, b, "-o", tmp_path / "out", *MEMBER_OPTS)
    rows = {x["target"]: x for x in map(json.loads, (tmp_path / "out" / "fleet.jsonl").read_text().splitlines())}
    assert r.exit_code == 0
    assert (rows[str(a)]["verdict"], rows[str(a)]["attempts"]) == ("pass", 2)
    assert (rows[str(b)]["verdict"], rows[str(b)]["attempts"]) == ("pass", 1)


def test_a_member_past_the_timeout_is_killed_failed_and_not_retried(tmp_path, cli):
    """A check that does not end (here a probe of 100,000 steps) is killed at --timeout; the rest finish."""
    slow = _model("BertForSequenceClassification", bert_config(num_labels=2), tmp_path / "slow-bert")
    quick = _model("GPT2LMHeadModel", gpt2_config(), tmp_path / "gpt2")
    r = cli("fleet", slow, "-o", tmp_path / "out", "--timeout", "4", "--probe", "--probe-steps", "100000")
    r2 = cli("fleet", quick, "-o", tmp_path / "out2", "--timeout", "4", *MEMBER_OPTS)
    row = json.loads((tmp_path / "out" / "fleet.jsonl").read_text().splitlines()[0])
    assert r.exit_code == 2, r.stderr
    assert (row["verdict"], row["attempts"]) == ("failed", 1)
    assert "still running after 4 s and was killed" in row["reason"]
    assert 4 <= row["seconds"] < 30
    assert r2.exit_code == 0   # the same limit does not touch a check that ends in time


def test_resume_skips_unchanged_members_and_rechecks_changed_bytes(tmp_path, cli):
    members = [_model("BertForSequenceClassification", bert_config(num_labels=3), tmp_path / f"m{i}", seed=i)
               for i in range(2)]
    out = tmp_path / "out"

    def fleet(*extra):
        r = cli("fleet", *members, "-o", out, *MEMBER_OPTS, *extra)
        rows = {Path(x["target"]).name: x for x in map(json.loads, (out / "fleet.jsonl").read_text().splitlines())}
        return r, rows

    r, rows = fleet()
    assert "2 checked, 0 skipped unchanged" in r.stderr and r.exit_code == 0
    first = {k: v["report"] for k, v in rows.items()}
    r, rows = fleet()
    assert "2 unchanged since the last run" in r.stderr and "0 checked, 2 skipped unchanged" in r.stderr
    assert all(v["resumed"] for v in rows.values()) and r.exit_code == 0
    edit_tensors(members[1], _zero("classifier.weight", "classifier.bias"))   # new bytes: checked again
    r, rows = fleet()
    assert "1 checked, 1 skipped unchanged" in r.stderr
    assert not rows["m1"]["resumed"] and rows["m0"]["resumed"]
    assert rows["m1"]["rules"].get("IC102") and {k: v["report"] for k, v in rows.items()} == first
    os.utime(members[0] / "model.safetensors")   # touched, same bytes: hashed again, and skipped
    r, rows = fleet()
    assert "0 checked, 2 skipped unchanged" in r.stderr and rows["m0"]["resumed"]
    r, rows = fleet("--fail-on", "warning")   # other settings: every report is stale
    assert "2 checked, 0 skipped unchanged" in r.stderr
    assert r.exit_code == 1 and rows["m1"]["verdict"] == "fail"
    r, _ = fleet("--fail-on", "warning", "--force")
    assert "2 checked, 0 skipped unchanged" in r.stderr


def _hf_cache(root: Path, model: Path, repo="acme/tiny-bert", commits=("a" * 40, "b" * 40)) -> Path:
    """A Hugging Face cache as huggingface_hub lays it out: blobs, snapshots of symlinks, refs."""
    import hashlib

    repo_dir = root / ("models--" + repo.replace("/", "--"))
    for commit in commits:
        snap = repo_dir / "snapshots" / commit
        snap.mkdir(parents=True)
        for f in model.iterdir():
            blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes() + commit.encode()).hexdigest()
            blob.parent.mkdir(exist_ok=True)
            blob.write_bytes(f.read_bytes())
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commits[-1])
    (repo_dir / "refs" / "v1").write_text(commits[-1])   # two refs, one commit: one member
    return root


def test_sources_globs_lists_caches_and_hub_ids(tmp_path, monkeypatch):
    models = [_model("BertForSequenceClassification", bert_config(num_labels=2), tmp_path / "sweep" / f"lr{i}", seed=i)
              for i in range(3)]
    cache = _hf_cache(tmp_path / "hub", models[0])
    (tmp_path / "list.txt").write_text("# the vendor's deliveries\nsweep/lr0\n\nacme/tiny-bert   # a Hub id\n"
                                       "missing-org/missing-model\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    got = expand([str(tmp_path / "sweep" / "lr*"), "@" + str(tmp_path / "list.txt"), str(cache)])
    labels = [m.label for m in got]
    assert labels[:3] == [str(m) for m in models]   # the glob, sorted; sweep/lr0 from the list is a duplicate
    assert labels[3] == "acme/tiny-bert" and got[3].target.endswith("snapshots/" + "b" * 40)
    assert labels[4] == "missing-org/missing-model" and got[4].target == "missing-org/missing-model"
    # the cache: each revision once (snapshot b is already in as acme/tiny-bert)
    assert labels[5:] == ["acme/tiny-bert@aaaaaaaaaa"]
    assert [m.kind for m in got] == ["model"] * 3 + ["cache"] * 3
    from initcheck.errors import InputError

    with pytest.raises(InputError, match="matches nothing"):
        expand([str(tmp_path / "nothing-*")])
    with pytest.raises(InputError, match="cannot read the list"):
        expand(["@" + str(tmp_path / "no-list.txt")])


def test_cache_members_and_a_missing_hub_id_through_the_cli(tmp_path, cli, monkeypatch):
    model = _model("BertForSequenceClassification", bert_config(num_labels=2), tmp_path / "m")
    cache = _hf_cache(tmp_path / "hub", model)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    r = cli("fleet", "hf-cache:", "missing-org/missing-model", "-o", tmp_path / "out", *MEMBER_OPTS)
    rows = [json.loads(x) for x in (tmp_path / "out" / "fleet.jsonl").read_text().splitlines()]
    assert [x["verdict"] for x in rows] == ["pass", "pass", "error"]
    assert "no model 'missing-org/missing-model'" in rows[2]["reason"] and r.exit_code == 2
    assert rows[0]["sha256"] == rows[1]["sha256"]   # the same bytes at two revisions


def test_bad_fleet_input_is_one_line_and_exit_2(tmp_path, cli):
    model = _model("BertForSequenceClassification", bert_config(num_labels=2), tmp_path / "m")
    for args, says in [((tmp_path / "nothing-*",), "the pattern matches nothing"),
                       ((model, "--jobs", "0"), "--jobs 0 is impossible"),
                       ((model, "--rules", "nope"), "no such rule pack"),
                       ((), "name at least one SOURCE")]:
        r = cli("fleet", *args, "-o", tmp_path / "out")
        assert r.exit_code == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    before = sorted(p.name for p in model.iterdir())
    r = cli("fleet", model, "-o", model / "reports")   # never writes into a checked folder
    assert r.exit_code == 2 and "never writes into the folder it checks" in r.stderr
    assert sorted(p.name for p in model.iterdir()) == before


def test_member_options_are_the_checks_own(tmp_path):
    from initcheck.fleet.options import _check_params

    names = {p.name for p in _check_params()}
    assert {"rules", "config_file", "fail_on", "probe", "probe_steps", "device", "select", "base"} <= names
    assert not names & {"outputs", "formats", "quiet", "write_baseline"}
    argv = member_argv({"fail_on": "warning", "probe": False, "select": ("IC1", "IC3"), "rules": None, "lr": 1e-3,
                        "trust_remote_code": False, "heads": ()})
    assert argv == ["--fail-on", "warning", "--select", "IC1", "--select", "IC3", "--no-probe", "--lr", "0.001"]


def test_probe_settings_reach_each_member(tmp_path, cli):
    """With the probe on (3 steps, seed 1), the member's verdict, findings and probe trace equal the
    same check's alone (in this process: torch is already imported here, the probe's start-up is not)."""
    from initcheck import check

    zero = _model("RobertaForSequenceClassification", roberta_config(num_labels=3), tmp_path / "zero-head",
                  edit=_zero("classifier.dense.weight", "classifier.out_proj.weight"))
    r = cli("fleet", zero, "-o", tmp_path / "out", "--probe-steps", "3", "--seed", "1")
    row = json.loads((tmp_path / "out" / "fleet.jsonl").read_text())
    data = json.loads((tmp_path / "out" / row["report"]).read_text())
    alone = check(str(zero), probe_steps=3, seed=1)
    assert (row["verdict"], row["exit_code"], r.exit_code) == ("fail", 1, 1) and not alone.passed
    assert data["probe"]["steps"] == 3 == len(alone.scan.probe["loss"])
    assert data["probe"]["loss"] == pytest.approx(alone.scan.probe["loss"], rel=1e-5)
    assert sorted((f["rule"], f.get("param") or "") for f in data["findings"]) == \
        sorted((f.rule, f.param or "") for f in alone.findings)
    assert row["rules"].get("IC304")


def test_pool_never_starts_a_member_that_does_not_fit(monkeypatch):
    """The memory bound: with room for one big member, big ones run one at a time while small
    ones fill the other slots; a member bigger than the whole budget still runs, alone."""
    import threading

    from initcheck.fleet import pool

    lock, running, peak = threading.Lock(), {"bytes": 0, "n": 0}, {"bytes": 0, "alone": None}

    def fake(spec):
        with lock:
            running["bytes"] += spec["bytes"]
            running["n"] += 1
            peak["bytes"] = max(peak["bytes"], running["bytes"]) if spec["bytes"] <= 100 else peak["bytes"]
            if spec["bytes"] > 100:
                peak["alone"] = running["n"]
        time.sleep(0.05)
        with lock:
            running["bytes"] -= spec["bytes"]
            running["n"] -= 1
        return {"status": "done", "exit_code": 0, "seconds": 0.05, "reason": None, "json": None, "html": None}

    monkeypatch.setattr(pool, "run_member", fake)
    specs = [{"name": f"big{i}", "bytes": 60, "attempt": 1} for i in range(4)] + \
            [{"name": f"small{i}", "bytes": 10, "attempt": 1} for i in range(8)] + [{"name": "huge", "bytes": 500, "attempt": 1}]
    done = []
    pool.run_pool(specs, jobs=4, budget=100, retries=1, on_result=lambda s, r: done.append(s["name"]))
    assert sorted(done) == sorted(s["name"] for s in specs)
    assert peak["bytes"] <= 100 and peak["alone"] == 1


def test_estimate_counts_parameters_from_the_headers(tmp_path):
    from transformers import BertForSequenceClassification

    from initcheck.fleet.estimate import member_bytes, parameters

    folder = _model("BertForSequenceClassification", bert_config(num_labels=3), tmp_path / "m")
    torch.manual_seed(0)
    n = sum(t.numel() for t in BertForSequenceClassification(bert_config(num_labels=3)).state_dict().values())
    assert parameters(str(folder)) == n
    assert member_bytes(str(folder), probe=True, budget=None) > member_bytes(str(folder), probe=False, budget=None)
    assert member_bytes(str(folder), probe=True, budget=1.0) == member_bytes(str(folder), probe=False, budget=None)


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium not installed")
def test_index_html_sorts_in_a_real_browser(pool_run):
    """Headless Chromium: no console error, no request beyond the file, and a click sorts the table."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")
    out, _ = pool_run
    rows = [json.loads(x) for x in (out / "fleet.jsonl").read_text().splitlines()]
    seen = {"requests": [], "errors": []}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("request", lambda q: seen["requests"].append(q.url))
            page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.goto((out / "index.html").as_uri(), wait_until="load")

            def column(i):
                return page.evaluate(f"[...document.querySelectorAll('#members tbody tr')].map(r => r.cells[{i}].innerText.trim())")

            page.click("th:has-text('seconds')")
            seconds = [float(x) for x in column(7)]
            page.click("th:has-text('seconds')")
            descending = [float(x) for x in column(7)]
            page.click("th:has-text('verdict')")
            verdicts = column(1)
        finally:
            browser.close()
    assert seen["errors"] == [] and {u.split(":", 1)[0] for u in seen["requests"]} == {"file"}
    assert seconds == sorted(seconds) and descending == sorted(seconds, reverse=True) and len(seconds) == len(rows)
    order = {"FAIL": 0, "FAILED": 1, "ERROR": 2, "PASS": 3}
    assert [order[v.split()[0]] for v in verdicts] == sorted(order[r["verdict"].upper()] for r in rows)



def test_a_url_member_is_never_resumed_unchanged(tmp_path):
    """An s3:// member's bytes are not hashed on the driver: a matching last row must not skip it."""
    from initcheck.fleet.resume import unchanged

    row = {"settings": "k", "verdict": "pass", "stat": "s", "digest": "d"}
    assert unchanged(row, "s3://bucket/model/", "s", "k", str(tmp_path)) is None
    local = tmp_path / "m"
    local.mkdir()
    assert unchanged(row, str(local), "s", "k", str(tmp_path)) is not None   # the same row for a folder stands
