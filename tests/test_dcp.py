"""Issue 28, part 1: DCP checkpoints (torch.distributed.checkpoint: FSDP, accelerate, torchtitan) read natively.

Every checkpoint here is written by ``torch.distributed.checkpoint.save`` itself: in one process
(``no_dist=True``), and with two ranks over gloo on localhost holding DTensor shards (rows split as
FSDP2 splits them, one layer's matrices split by columns as tensor parallelism does). Each DCP copy
is checked against the same weights saved as safetensors: the same statistics, the same findings.
"""

import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import bert_config, save, tree_digest

import initcheck

dcp = pytest.importorskip("torch.distributed.checkpoint")

STATS = ("numel", "nan", "inf", "zeros", "mean", "std", "min", "max", "absmax")


def dcp_save(state: dict, folder):
    """``dcp.save`` in this one process, no process group (what a single-GPU FSDP-style save writes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "torch.distributed is disabled ... assuming a single process"
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)
    return folder


def bert_pair(root, zero_head=False, optimizer=False, seed=0):
    """A tiny BertForSequenceClassification saved twice: ``root/st`` (save_pretrained) and ``root/dcp``
    (config.json + a DCP checkpoint of ``{"model": state_dict}``, as accelerate saves it)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(bert_config(num_labels=3, architectures=["BertForSequenceClassification"]))
    if zero_head:
        with torch.no_grad():
            model.classifier.weight.zero_()
    save(model, root / "st")
    model.config.save_pretrained(root / "dcp")
    state = {"model": model.state_dict()}
    if optimizer:
        opt = torch.optim.AdamW(model.parameters())
        model(torch.randint(0, 200, (2, 8)), labels=torch.tensor([0, 1])).loss.backward()
        opt.step()
        # the step changed the weights: save them again so both copies hold the same values
        save(model, root / "st")
        state = {"model": model.state_dict(), "optim": opt.state_dict()}
    dcp_save(state, root / "dcp")
    return root / "st", root / "dcp"


def table(report) -> dict:
    """The JSON tensor table by name, without the file column (the two copies store them in different files)."""
    return {t["name"]: {k: v for k, v in t.items() if k != "file"} for t in report.to_dict()["tensors"]}


def findings(report) -> list:
    return sorted((f["rule"], f.get("param"), f["message"]) for f in report.to_dict()["findings"])


def stats_of(report) -> dict:
    return {r.name: r.stats for r in report.scan.records if r.stats is not None}


def assert_same_stats(a: dict, b: dict, rel=1e-5):
    assert set(a) == set(b)
    for name, sa in a.items():
        for k in STATS:
            assert getattr(sa, k) == pytest.approx(getattr(b[name], k), rel=rel, abs=1e-9), (name, k)
        for k in ("row_norms", "row_means"):
            x, y = getattr(sa, k), getattr(b[name], k)
            assert (x is None) == (y is None), (name, k)
            if x is not None:
                np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7, err_msg=f"{name} {k}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return bert_pair(tmp_path_factory.mktemp("bert"))


def test_bert_dcp_reads_as_its_safetensors_copy(pair):
    st, folder = pair
    before = tree_digest(folder)
    a, b = initcheck.check(folder, probe=False), initcheck.check(st, probe=False)
    assert table(a) == table(b)                        # every column of the JSON tensor table
    assert_same_stats(stats_of(a), stats_of(b), rel=0)   # one chunk each: the very same values
    assert findings(a) == findings(b) == []            # a clean model: no finding on either copy
    files = {f["path"]: f for f in a.to_dict()["target"]["files"]}
    assert files["__0_0.distcp"]["kind"] == "weights" and files["__0_0.distcp"]["verdict"] == "loaded"
    assert files["__0_0.distcp"]["format"] == "dcp"
    assert files[".metadata"]["verdict"] == "inert" and "never unpickled" in files[".metadata"]["note"]
    assert "saved under 'model'" in files[".metadata"]["note"]   # the wrapper key is said, not stripped silently
    assert tree_digest(folder) == before               # nothing written into the checked folder


@pytest.mark.parametrize("family", ["resnet", "t5", "whisper"])
def test_families_read_as_their_save_pretrained_copy(family, tmp_path):
    """ResNet (BatchNorm's 0-d ``num_batches_tracked``, misaligned records), T5 and Whisper (both tie their LM
    head: ``state_dict()`` holds the embedding under several names, each written again by DCP) give the
    findings and statistics of their ``save_pretrained`` copy. The names marked ``tied_to`` are exactly those
    that share another's storage in memory (counted once, their scale judged as the embedding's), and the ones
    save_pretrained drops; no constant vector (a zero bias, a unit gain) is ever taken for a tie."""
    import transformers
    from test_conventions import _families

    cls, make = _families()[family]
    torch.manual_seed(0)
    model = getattr(transformers, cls)(make())
    st, dcp_dir = save(model, tmp_path / "st"), tmp_path / "dcp"
    model.config.save_pretrained(dcp_dir)
    dcp_save({"model": model.state_dict()}, dcp_dir)
    a, b = initcheck.check(st, probe=False), initcheck.check(dcp_dir, probe=False)
    assert a.exit_code == b.exit_code == 0
    assert sorted((f.rule, f.param, f.severity) for f in a.findings) == sorted((f.rule, f.param, f.severity) for f in b.findings)
    tied = {t["name"]: t["tied_to"] for t in b.to_dict()["tensors"] if t.get("tied_to")}
    first, shared = {}, {}
    for name, t in model.state_dict().items():
        shared.update({name: first[t.data_ptr()]} if t.data_ptr() in first else {})
        first.setdefault(t.data_ptr(), name)
    assert tied == shared and set(tied) == set(table(b)) - set(table(a)), tied
    assert (len(tied) > 0) == (family != "resnet")
    assert all(stats_of(b)[n].std == stats_of(b)[first].std for n, first in tied.items())
    assert_same_stats(stats_of(a), {n: s for n, s in stats_of(b).items() if n not in tied})
    assert b.to_dict()["target"]["parameters"] == a.to_dict()["target"]["parameters"]


def test_safetensors_serialization_format(pair, tmp_path):
    """FileSystemWriter(serialization_format=SAFETENSORS): each .distcp is a safetensors file keyed by name."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.filesystem import (
        FileSystemWriter,
        SerializationFormat,
    )

    st, _ = pair
    folder = tmp_path / "sf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": load_file(st / "model.safetensors")}, no_dist=True,
                 storage_writer=FileSystemWriter(str(folder), serialization_format=SerializationFormat.SAFETENSORS))
    (folder / "config.json").write_bytes((st / "config.json").read_bytes())
    a, b = initcheck.check(folder, probe=False), initcheck.check(st, probe=False)
    assert table(a) == table(b) and findings(a) == findings(b) == []
    note = {f["path"]: f for f in a.to_dict()["target"]["files"]}["__0_0.distcp"]["note"]
    assert "chunks of 57 tensor(s) (DCP's safetensors serialization format)" in note


def test_task_model_and_probe_run_on_dcp_weights(pair):
    """transformers cannot open a DCP folder: the task model gets initcheck's reading of it, and its load
    report and probe are those of the safetensors copy."""
    st, folder = pair
    a, b = initcheck.check(folder), initcheck.check(st)
    da, db = a.to_dict(), b.to_dict()
    assert da["load_report"] == db["load_report"] and da["load_report"]["status"] == "ran"
    assert da["load_report"]["verified"] == 57 and da["load_report"]["missing"] == []
    assert da["probe"]["loss"] == pytest.approx(db["probe"]["loss"], rel=1e-5)
    assert findings(a) == findings(b)


def test_zero_head_caught_as_in_safetensors(tmp_path):
    st, folder = bert_pair(tmp_path, zero_head=True)
    a, b = initcheck.check(folder, probe=False), initcheck.check(st, probe=False)
    assert findings(a) == findings(b)
    assert [(r, p) for r, p, _ in findings(a)] == [("IC102", "classifier.weight")]


def test_optimizer_state_skipped_and_said(tmp_path, cli):
    st, folder = bert_pair(tmp_path, optimizer=True)
    r = cli(folder, "--no-probe", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert not any(t["name"].startswith(("optim", "model.")) for t in d["tensors"])
    assert len(d["tensors"]) == 57
    ic211 = [f for f in d["findings"] if f["rule"] == "IC211"]
    assert len(ic211) == 1
    assert ic211[0]["message"].startswith(".metadata: not read as weights: optim (optimizer state of 57 parameter(s): step, exp_avg, exp_avg_sq)")
    # apart from IC211, the findings of the safetensors copy
    b = initcheck.check(st, probe=False)
    assert sorted((f["rule"], f["param"]) for f in d["findings"] if f["rule"] != "IC211") == [(x, p) for x, p, _ in findings(b)]
    files = {f["path"]: f for f in d["target"]["files"]}
    assert "pickled object(s) scanned, not read" in files[".metadata"]["note"]   # param groups: never read


def test_hashes_and_base_work_unchanged(pair, cli):
    st, folder = pair
    out = folder.parent / "r.json"
    r = cli(folder, "--no-probe", "--base", st, "-o", out, "-o", folder.parent / "r.sarif")   # SARIF: files hashed
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    files = {f["path"]: f for f in d["target"]["files"]}
    import hashlib

    assert files["__0_0.distcp"]["sha256"] == hashlib.sha256((folder / "__0_0.distcp").read_bytes()).hexdigest()
    assert d["findings"] == []   # against its own weights as safetensors: nothing changed
    assert {t["origin"] for t in d["tensors"]} == {"pretrained"}
    b = initcheck.check(st, probe=False, base=str(folder))   # and a DCP folder as the base
    assert findings(b) == [] and {r.origin for r in b.scan.records} == {"pretrained"}


# --- two ranks: sharded tensors ------------------------------------------------------------------

_TWO_RANKS = r'''
import os, socket, sys, warnings
import torch, torch.distributed as dist, torch.multiprocessing as mp
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor


def worker(rank, port, src, out):
    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    # FSDP2's layout (rows split over the ranks, uneven where the rows are odd), and one layer's
    # matrices split by columns as tensor parallelism splits them
    sd = {k: distribute_tensor(v, mesh, [Shard(1 if ".layer.0." in k and v.dim() == 2 else 0)])
          for k, v in load_file(src).items()}
    dcp.save({"model": sd}, checkpoint_id=out)
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the ranks share this process's imports (spawn would import torch twice more)
    mp.start_processes(worker, args=(port, sys.argv[1], sys.argv[2]), nprocs=2, join=True, start_method="fork")
'''


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The zero-head BERT (odd vocabulary: uneven row shards) written by two gloo ranks as DTensor shards."""
    from transformers import BertForSequenceClassification

    root = tmp_path_factory.mktemp("sharded")
    torch.manual_seed(1)
    cfg = bert_config(num_labels=3, architectures=["BertForSequenceClassification"])
    cfg.vocab_size = 201
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        w = model.bert.encoder.layer[1].intermediate.dense.weight   # [64, 32]: rows 0-31 on rank 0, 32-63 on rank 1
        w[40] = w[3]   # two units that compute the same function, one on each rank (IC104)
    save(model, root / "st")
    model.config.save_pretrained(root / "dcp")
    (root / "write.py").write_text(_TWO_RANKS)
    r = subprocess.run([sys.executable, str(root / "write.py"), str(root / "st" / "model.safetensors"), str(root / "dcp")], check=False,
                       capture_output=True, text=True, timeout=170, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "st", root / "dcp"


def test_two_rank_shards_reassembled(sharded):
    st, folder = sharded
    assert sorted(p.name for p in folder.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    meta = pickle.loads((folder / ".metadata").read_bytes())   # the test's own look at what DCP wrote
    word = meta.state_dict_metadata["model.bert.embeddings.word_embeddings.weight"]
    assert [tuple(c.sizes) for c in word.chunks] == [(101, 32), (100, 32)]
    cols = meta.state_dict_metadata["model.bert.encoder.layer.0.attention.self.query.weight"]
    assert [tuple(c.offsets) for c in cols.chunks] == [(0, 0), (0, 16)]
    a, b = initcheck.check(folder, probe=False), initcheck.check(st, probe=False)
    assert table(a) == table(b)
    assert_same_stats(stats_of(a), stats_of(b))
    assert findings(a) == findings(b)
    assert [(r, p) for r, p, _ in findings(a)] == [("IC102", "classifier.weight"), ("IC104", "bert.encoder.layer.1.intermediate.dense.weight")]
    files = {f["path"]: f for f in a.to_dict()["target"]["files"]}
    for name in ("__0_0.distcp", "__1_0.distcp"):
        assert files[name]["verdict"] == "loaded" and "57 of them sharded across chunks" in files[name]["note"]


def test_row_shards_measured_in_place(sharded, monkeypatch):
    """Large tensors sharded by whole rows (FSDP) are measured block by block with the compiled kernel,
    never copied together: the statistics of one pass, duplicate rows found across the two ranks."""
    from initcheck.loader import dcp as dcp_mod
    from initcheck.tensors import native, stats

    if not native.available():
        pytest.skip("the compiled kernel is not built: sharded tensors are assembled")
    st, folder = sharded
    assembled, blocks = [], []
    assemble, measure = dcp_mod._assemble, stats._compute_row_blocks
    monkeypatch.setattr(stats, "ROW_BLOCKS_FROM", 0)   # every 2-D row-sharded tensor of this tiny model
    monkeypatch.setattr(dcp_mod, "_assemble", lambda shape, dt, recs: assembled.append(shape) or assemble(shape, dt, recs))
    monkeypatch.setattr(stats, "_compute_row_blocks", lambda rec, raw, b, o: blocks.append(rec.name) or measure(rec, raw, b, o))
    a, b = initcheck.check(folder, probe=False), initcheck.check(st, probe=False)
    two_d = sorted(r.name for r in b.scan.records if len(r.shape) == 2 and ".layer.0." not in r.name)
    assert sorted(blocks) == two_d and "bert.encoder.layer.1.intermediate.dense.weight" in blocks
    # copied together: only 1-D tensors and layer 0's six column-split matrices
    assert len([shape for shape in assembled if len(shape) == 2]) == 6
    sa, sb = stats_of(a), stats_of(b)
    assert_same_stats(sa, sb)
    for name in blocks:
        assert sa[name].robust_std == pytest.approx(sb[name].robust_std, rel=1e-6)
        assert (sa[name].dup_exact_rows, sa[name].dup_near_rows) == (sb[name].dup_exact_rows, sb[name].dup_near_rows)
    assert sa["bert.encoder.layer.1.intermediate.dense.weight"].dup_groups == sb["bert.encoder.layer.1.intermediate.dense.weight"].dup_groups != []
    assert findings(a) == findings(b)


def test_large_shards_streamed_never_assembled(sharded, tmp_path, monkeypatch):
    """Over [scan] dcp_assemble_max_bytes a sharded tensor is measured chunk by chunk: the same statistics
    to float tolerance, and no array of the whole tensor is ever built."""
    st, folder = sharded
    pack = tmp_path / "small.toml"
    pack.write_text("[scan]\ndcp_assemble_max_bytes = 4096\n")
    from initcheck.loader import dcp as dcp_mod
    from initcheck.tensors import stats

    built, whole, streamed = [], [], []
    assemble, real, fold = dcp_mod._assemble, dcp_mod.Pieces.__array__, stats.compute_pieces
    monkeypatch.setattr(dcp_mod, "_assemble", lambda shape, dt, recs: built.append(np.prod(shape) * 4) or assemble(shape, dt, recs))
    monkeypatch.setattr(dcp_mod.Pieces, "__array__", lambda self, *a, **k: whole.append(self.shape) or real(self, *a, **k))
    monkeypatch.setattr(stats, "compute_pieces", lambda rec, raw, o: streamed.append(rec.name) or fold(rec, raw, o))
    a, b = initcheck.check(folder, probe=False, rules=str(pack)), initcheck.check(st, probe=False)
    assert built and max(built) <= 4096 and whole == []   # small sharded tensors are assembled; nothing larger ever is
    over = sorted(n for n, x in stats_of(b).items() if x.numel * 4 > 4096)   # fp32, every tensor sharded
    assert sorted(streamed) == over and len(over) == 8 and "bert.embeddings.word_embeddings.weight" in over
    assert_same_stats(stats_of(a), stats_of(b))
    big = stats_of(a)["bert.embeddings.word_embeddings.weight"]   # 201 x 32 fp32: 25,728 bytes, streamed
    assert big.robust_std == pytest.approx(stats_of(b)["bert.embeddings.word_embeddings.weight"].robust_std, rel=0.1)
    # the planted duplicate rows sit in a streamed tensor: IC104 is not checked there, and the file table says so
    assert findings(a) == [f for f in findings(b) if f[0] != "IC104"]
    assert [f[1] for f in findings(b) if f[0] == "IC104"] == ["bert.encoder.layer.1.intermediate.dense.weight"]
    note = {f["path"]: f for f in a.to_dict()["target"]["files"]}["__0_0.distcp"]["note"]
    assert "; 8 over the rule pack's dcp_assemble_max_bytes (4096) measured chunk by chunk, never held whole (duplicate rows, IC104, not checked" in note


def test_bf16_records_at_odd_bytes(tmp_path):
    """DCP writes each record where the last ended: bf16 values at odd addresses are realigned (one copy),
    or, over the limit, a block at a time; the statistics are those of the safetensors copy either way."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {f"layers.{i}.weight": (0.02 * torch.randn(48 + i, 96)).to(torch.bfloat16) for i in range(6)}
    state["layers.0.weight"][3] = float("nan")
    (tmp_path / "st").mkdir()
    save_file(state, tmp_path / "st" / "model.safetensors")
    folder = dcp_save(state, tmp_path / "dcp")
    meta = pickle.loads((folder / ".metadata").read_bytes())
    assert any(info.offset % 2 for info in meta.storage_data.values())   # some records start at an odd byte
    pack = tmp_path / "small.toml"
    pack.write_text("[scan]\ndcp_assemble_max_bytes = 1024\n")
    b = initcheck.check(tmp_path / "st", probe=False)
    for options in ({}, {"rules": str(pack)}):
        a = initcheck.check(folder, probe=False, **options)
        assert_same_stats(stats_of(a), stats_of(b), rel=0 if not options else 1e-5)
        assert stats_of(a)["layers.0.weight"].first_nonfinite == stats_of(b)["layers.0.weight"].first_nonfinite == (3, 0)
        assert findings(a) == findings(b)
    note = {f["path"]: f for f in a.to_dict()["target"]["files"]}["__0_0.distcp"]["note"]
    assert "over the rule pack's dcp_assemble_max_bytes (1024) measured chunk by chunk" in note   # the odd ones


# --- layouts: accelerate's subfolder, FSDP flat parameters, a run of DCP checkpoints ------------

def test_accelerate_subfolder_and_run_post_mortem(tmp_path, cli):
    """Trainer / accelerate with FSDP SHARDED_STATE_DICT: checkpoint-N/pytorch_model_fsdp_0/ holds the model,
    optimizer_0/ the optimizer; a run of such checkpoints is judged as the same run saved with save_pretrained."""
    from transformers import BertForSequenceClassification

    for step, seed in ((10, 0), (20, 1)):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(bert_config(num_labels=3, architectures=["BertForSequenceClassification"]))
        opt = torch.optim.AdamW(model.parameters())
        model(torch.randint(0, 200, (2, 8)), labels=torch.tensor([0, 1])).loss.backward()
        opt.step()
        state = {"global_step": step, "log_history": [{"step": step, "loss": 1.0 / step}]}
        ck, twin = tmp_path / "run" / f"checkpoint-{step}", tmp_path / "twin" / f"checkpoint-{step}"
        model.config.save_pretrained(ck)
        dcp_save({"model": model.state_dict()}, ck / "pytorch_model_fsdp_0")
        dcp_save({"optimizer": opt.state_dict()}, ck / "optimizer_0")
        save(model, twin)
        for folder in (ck, twin):
            (folder / "trainer_state.json").write_text(json.dumps(state))

    def run(path):
        r = cli(path, "--no-probe", "--format", "json")
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    d, t = run(tmp_path / "run" / "checkpoint-20"), run(tmp_path / "twin" / "checkpoint-20")
    assert table_rows(d) == table_rows(t) and len(d["tensors"]) == 57
    assert sorted((f["rule"], f["param"]) for f in d["findings"]) == sorted((f["rule"], f["param"]) for f in t["findings"])
    files = {f["path"]: f for f in d["target"]["files"]}
    assert files["pytorch_model_fsdp_0/__0_0.distcp"]["verdict"] == "loaded"
    opt_file = files["optimizer_0/__0_0.distcp"]
    assert opt_file["kind"] == "training state" and opt_file["verdict"] == "clean"   # scanned as optimizer.pt is, never read
    assert files["optimizer_0/.metadata"]["verdict"] == "inert"

    d, t = run(tmp_path / "run"), run(tmp_path / "twin")
    assert d["run"]["checkpoints"] == [{"path": "checkpoint-10", "step": 10, "weights": True},
                                       {"path": "checkpoint-20", "step": 20, "weights": True}]
    by_name = lambda rows: sorted(rows, key=lambda m: m["name"])
    assert by_name(d["run"]["movement"]) == by_name(t["run"]["movement"]) and len(d["run"]["movement"]) == 57   # step 10 -> 20
    assert sorted((f["rule"], f["param"], f["message"]) for f in d["findings"]) == sorted((f["rule"], f["param"], f["message"]) for f in t["findings"])
    assert not [f for f in d["findings"] if f["rule"] in ("IC401", "IC404", "IC405")]   # the other checkpoint's DCP files: scanned, clean


def table_rows(d) -> dict:
    return {x["name"]: {k: v for k, v in x.items() if k != "file"} for x in d["tensors"]}


def test_fsdp_flat_parameter_named_not_read(tmp_path, cli):
    folder = tmp_path / "flat"
    torch.manual_seed(0)
    flat = torch.randn(1000)
    dcp_save({"model": {"_fsdp_wrapped_module._flat_param": flat, "_fsdp_wrapped_module.head.weight": torch.randn(3, 8)}}, folder)
    r = cli(folder, "--no-probe", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [t["name"] for t in d["tensors"]] == ["_fsdp_wrapped_module.head.weight"]
    msg = next(f["message"] for f in d["findings"] if f["rule"] == "IC211")
    assert "_fsdp_wrapped_module._flat_param (FSDP flat parameter" in msg

    only = tmp_path / "only-flat"
    dcp_save({"model": {"_flat_param": flat}}, only)
    r = cli(only, "--no-probe")
    assert r.exit_code == 2
    assert "holds no model tensor initcheck can read" in r.output and "FSDP flat parameter" in r.output


# --- bad and hostile input ----------------------------------------------------------------------

def _edit_metadata(folder, fn):
    """The test rewrites what DCP wrote (its own trusted file) to plant a defect."""
    meta = pickle.loads((folder / ".metadata").read_bytes())
    fn(meta)
    (folder / ".metadata").write_bytes(pickle.dumps(meta))


def _one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and "Traceback" not in line, line
    for w in words:
        assert w in line, line


def test_truncated_and_missing_shards(tmp_path, cli):
    folder = dcp_save({"w": torch.randn(64, 16), "b": torch.randn(16)}, tmp_path / "t")
    _one_line_error(cli(folder / "__0_0.distcp", "--no-probe"), "one file of a DCP checkpoint", "pass its folder")
    data = (folder / "__0_0.distcp").read_bytes()
    (folder / "__0_0.distcp").write_bytes(data[: len(data) // 2])
    _one_line_error(cli(folder, "--no-probe"), "__0_0.distcp", "runs past the end of the file")
    (folder / "__0_0.distcp").unlink()
    (folder / "__1_0.distcp").write_bytes(data)   # still a DCP folder, but the named shard is gone
    _one_line_error(cli(folder, "--no-probe"), "__0_0.distcp")


def test_bad_chunk_layouts_refused(tmp_path, cli):
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata

    folder = dcp_save({"w": torch.randn(64, 16)}, tmp_path / "gap")

    def gap(meta):   # the chunk claims only half the tensor: half of it would be read from nowhere
        meta.state_dict_metadata["w"].chunks[0] = ChunkStorageMetadata(torch.Size([0, 0]), torch.Size([32, 16]))

    _edit_metadata(folder, gap)
    _one_line_error(cli(folder, "--no-probe"), ".metadata", "do not tile")

    folder = dcp_save({"w": torch.randn(64, 16)}, tmp_path / "escape")

    def escape(meta):
        for info in meta.storage_data.values():
            info.relative_path = "../outside.distcp"

    _edit_metadata(folder, escape)
    _one_line_error(cli(folder, "--no-probe"), "must be a plain file name")

    folder = dcp_save({"w": torch.randn(64, 16)}, tmp_path / "lie")

    def lie(meta):   # metadata says 16 x 64; the record holds 64 x 16
        m = meta.state_dict_metadata["w"]
        m.size = torch.Size([16, 64])
        m.chunks[0] = ChunkStorageMetadata(torch.Size([0, 0]), torch.Size([16, 64]))
        for k in list(meta.storage_data):
            meta.storage_data[type(k)(k.fqn, torch.Size([0, 0]))] = meta.storage_data.pop(k)

    _edit_metadata(folder, lie)
    _one_line_error(cli(folder, "--no-probe"), "__0_0.distcp", "but the metadata says float32 [16, 64]")


def test_transformed_chunks_said_not_read(tmp_path, cli):
    folder = dcp_save({"w": torch.randn(64, 16), "v": torch.randn(8, 16)}, tmp_path / "z")

    def compress(meta):
        for k, info in meta.storage_data.items():
            if k.fqn == "v":
                info.transform_descriptors = ["zstd"]

    _edit_metadata(folder, compress)
    r = cli(folder, "--no-probe", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert [t["name"] for t in d["tensors"]] == ["w"]
    note = {f["path"]: f for f in d["target"]["files"]}["__0_0.distcp"]["note"]
    assert "not read: v (stored with DCP stream transforms (zstd)" in note


def test_hostile_metadata_never_runs(tmp_path, cli, marker):
    """DCP's own loader runs pickle.load on .metadata: a planted global is IC401's error, and initcheck runs nothing."""
    folder = dcp_save({"w": torch.randn(64, 16)}, tmp_path / "evil")

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    def plant(meta):
        meta.planner_data = {"w": ("w",), "x": Evil()}

    _edit_metadata(folder, plant)
    r = cli(folder, "--no-probe", "--format", "json")
    assert r.exit_code == 1, r.output
    d = json.loads(r.stdout)
    ic401 = [f for f in d["findings"] if f["rule"] == "IC401"]
    assert len(ic401) == 1 and "posix.system" in ic401[0]["message"] and ic401[0]["severity"] == "error"
    assert [t["name"] for t in d["tensors"]] == ["w"]
    assert {f["path"]: f for f in d["target"]["files"]}[".metadata"]["verdict"] == "unsafe"
