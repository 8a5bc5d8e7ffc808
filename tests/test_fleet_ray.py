"""initcheck fleet --ray on a real local Ray cluster (one start per module): the members of
tests/test_fleet.py get the verdicts their single ``initcheck check`` runs give them; a member whose
check process is SIGKILLed and one whose Ray worker is SIGKILLed (a lost node) fail alone."""

import json
import shutil
import time

import pytest
from test_fleet import MEMBER_OPTS, assert_same_as_alone, fleet_dir  # noqa: F401 - fleet_dir is a fixture

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


def _ray_children():
    return [p for p in psutil.Process().children(recursive=True)
            if any(n in " ".join(_cmdline(p)) for n in ("raylet", "gcs_server", "default_worker.py"))]


def _cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.fixture(scope="module")
def ray_cluster():
    t = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    print(f"\nRay local cluster started in {time.monotonic() - t:.1f} s")
    yield ray.cluster_resources()
    ray.shutdown()
    deadline = time.monotonic() + 20
    while _ray_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ray_children(), "Ray processes left behind"


def test_ray_verdicts_equal_single_runs_and_killed_members_fail_alone(ray_cluster, fleet_dir, cli, monkeypatch):  # noqa: F811
    assert ray_cluster["CPU"] == 2
    root = fleet_dir["root"]
    crash = fleet_dir["crash"]
    lost = shutil.copytree(fleet_dir["members"][3], root / "members" / "lost-node")   # its Ray worker dies
    monkeypatch.setenv("INITCHECK_FLEET_FAULT", "kill:crash-*,kill-task:lost-*")
    out = root / "out-ray"
    t = time.monotonic()
    r = cli("fleet", *fleet_dir["members"], crash, lost, "--ray", "-o", out, *MEMBER_OPTS)
    took = time.monotonic() - t
    rows = assert_same_as_alone(out, fleet_dir["singles"])
    print(f"ray fleet of {len(rows)}: {took:.1f} s")
    assert "on the Ray (local)" in r.stderr
    assert rows[str(crash)]["verdict"] == "failed" and rows[str(crash)]["attempts"] == 2
    assert "SIGKILL" in rows[str(crash)]["reason"]
    assert rows[str(lost)]["verdict"] == "failed"
    assert rows[str(lost)]["reason"].startswith("the Ray task failed after 2 attempt(s)")
    assert r.exit_code == 2
    n = len(fleet_dir["members"]) + 2
    assert f"fleet: {n} member(s):" in r.stderr and f"{n} checked" in r.stderr
    assert all(row["node"] for row in rows.values() if row["verdict"] != "failed")
    # the same index and line layout as the pool's
    lines = [json.loads(x) for x in (out / "fleet.jsonl").read_text().splitlines()]
    assert [x["target"] for x in lines] == [str(m) for m in fleet_dir["members"]] + [str(crash), str(lost)]
    assert (out / "index.html").read_text().count("<tr>") == n + 1
