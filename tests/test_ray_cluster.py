"""A real Ray cluster: ``ray start`` head plus two worker nodes on loopback, in a network namespace
with only ``lo`` (tests/ray_util.py). One worker node is killed mid-run; ``fastsal predict --ray``
still finishes with every output, byte-identical to the local run, no temporaries, one manifest;
a rerun of the finished job computes nothing."""
from __future__ import annotations

import glob
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_util import LoopbackCluster, need_netns, need_ray

need_ray()

OSIE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "osie" / "stimuli"
N_IMAGES = 24


def _outputs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".json"}


def test_a_lost_worker_node_loses_nothing(tmp_path):
    need_netns()
    found = sorted(glob.glob(str(OSIE / "*.jpg")))[:N_IMAGES]
    if len(found) < N_IMAGES:
        pytest.skip("OSIE stimuli (../shared/data/osie/stimuli) not present")
    images = tmp_path / "images"
    for i, src in enumerate(found):  # two folders: output names mirror the tree
        (images / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, images / f"part{i % 2}")
    predict = [sys.executable, "-m", "fastsal", "predict", str(images), "--format", "all", "--threads", "1", "-q",
               "--batch-size", "2"]
    subprocess.run([*predict, "-o", str(tmp_path / "local")], check=True, timeout=600, capture_output=True)

    out = tmp_path / "ray"
    with LoopbackCluster(workers=2) as cluster:
        driver = subprocess.Popen(cluster.command(*predict, "-o", str(out), "--ray", cluster.address,
                                                  "--ray-actors", "3"),
                                  env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while not list(out.rglob("*.png")) and driver.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert driver.poll() is None, f"the run ended before a node could be lost: {driver.stderr.read()[-2000:]}"
            killed = cluster.kill_worker(2)  # mid-run: maps are being written, most are not yet
            written_when_killed = len(list(out.rglob("*.png")))
            stdout, stderr = driver.communicate(timeout=400)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait(timeout=30)
        assert killed and written_when_killed < N_IMAGES
        assert driver.returncode == 0, stderr[-3000:]

        local, remote = _outputs(tmp_path / "local"), _outputs(out)
        assert len(local) == 3 * N_IMAGES and list(remote) == list(local)
        assert [name for name in local if local[name] != remote[name]] == []
        assert not [p for p in out.rglob("*") if ".tmp" in p.name]
        assert [p.name for p in out.glob("*.json")] == ["manifest.json"]
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["complete"] is True and manifest["failed"] == []
        assert len(manifest["written"]) == N_IMAGES

        # the finished job again: nothing to compute, so not even the cluster is asked (an address
        # nobody listens on would fail any remote work)
        rerun = subprocess.run(cluster.command(*predict, "-o", str(out), "--ray", "127.0.0.1:1"), env=cluster.env,
                               capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert _outputs(out) == remote
        again = json.loads((out / "manifest.json").read_text())
        assert again["skipped_existing"] == N_IMAGES and all(e.get("earlier_run") for e in again["written"])
