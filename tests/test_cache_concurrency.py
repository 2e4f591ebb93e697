"""The model cache under several processes at once, and damaged cache files.

Several ``fastsal predict --shard i/N`` runs started together on an empty cache used to fail at
random (OpenVINO's own CACHE_DIR is not multi-process safe: "cannot set permissions: No such file
or directory [...blob]", once a Bus error), and a compiled blob damaged in the middle was used
without a check (wrong maps, exit 0). These tests race real processes and damage real files.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastsal
from fastsal.files import file_sha256
from fastsal.predict import example_image
from fastsal.runtime import EngineNotice, engines

pytestmark = pytest.mark.skipif(not engines.installed("openvino"), reason="openvino not installed")

# Each race starts from a fresh empty cache. Collisions are random: before the fix, three
# processes released together rarely collided, while starts ~0.7 s apart (a later process meeting
# the blob an earlier one was still writing) failed in about half the races (Bus error included).
STAGGERS = (0.0, 0.7)


def _env(root: Path) -> dict[str, str]:
    """A fresh account: empty HOME and cache, one thread per process (2-core CI machines)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTSAL_", "XDG_"))}
    for var in ("HOME", "FASTSAL_CACHE_DIR"):
        (root / var).mkdir(parents=True)
        env[var] = str(root / var)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start_together(scripts: list[str], env: dict[str, str], cwd: Path,
                    stagger: float = 0.0) -> list[subprocess.CompletedProcess]:
    """Run each Python script in its own process, released together: each imports fastsal and
    OpenVINO first, then waits for a go-file, so the processes really meet in the cache. Process
    ``i`` then waits ``i * stagger`` seconds more (a start offset, not a timing assertion)."""
    go = cwd / "go"
    procs = []
    for i, script in enumerate(scripts):
        wrapper = (f"import pathlib, sys, time\n"
                   f"import fastsal, fastsal.runtime.build, fastsal.cli, fastsal.export, openvino\n"
                   f"{_COUNT_EXPORTS}"
                   f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.002)\n"
                   f"time.sleep({i * stagger})\n"
                   f"exec(compile({script!r}, 'race', 'exec'))\n")
        procs.append(subprocess.Popen([sys.executable, "-c", wrapper], env=env, cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    go.write_text("go")
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


# Each conversion into the cache says so on stderr: racing processes must convert once, not each.
_EXPORTED = "fastsal-test: exported"
_COUNT_EXPORTS = f"""
_export = fastsal.export.export
def _counted(*a, **k):
    print({_EXPORTED!r}, file=sys.stderr, flush=True)
    return _export(*a, **k)
fastsal.export.export = _counted
"""


def _exports(results: list[subprocess.CompletedProcess]) -> int:
    return sum(res.stderr.count(_EXPORTED) for res in results)


def _cli(*argv: str) -> str:
    """A script that runs ``python -m fastsal argv...``."""
    return f"import runpy, sys\nsys.argv = ['fastsal', *{list(argv)!r}]\nrunpy.run_module('fastsal', run_name='__main__')\n"


def _images(folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("stagger", STAGGERS)
def test_sharded_predict_on_an_empty_cache(tmp_path, stagger):
    """Three shards started at once on an empty cache: all succeed, each writes its maps."""
    env = _env(tmp_path)
    images = _images(tmp_path / "in")
    out = tmp_path / "out"
    # --squash: one input size for the three images of different aspects, so one export to share
    scripts = [_cli("predict", *map(str, images), "--shard", f"{i}/3", "-o", str(out), "-q", "--threads", "1",
                    "--backend", "openvino", "--squash") for i in range(3)]
    results = _start_together(scripts, env, tmp_path, stagger)
    for res in results:
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr, res.stderr
    assert _exports(results) == 1  # one converted the model; the others waited and reused it
    assert sorted(p.stem for p in out.glob("*.png")) == ["img0", "img1", "img2"]
    blobs = list((tmp_path / "FASTSAL_CACHE_DIR" / "openvino").glob("*.blob"))
    assert blobs and all(_blob_is_valid(b) for b in blobs)


_COMPILE_BATCHES = """
import numpy as np, fastsal
p = fastsal.load(backend="openvino", threads=1, input_size=(192, 256))
for n in range(1, 5):
    assert p.runner(np.zeros((n, 3, 192, 256), np.float32)).shape == (n, 1, 192, 256)
print("ok")
"""


@pytest.mark.parametrize("processes,stagger", [(2, STAGGERS[0]), (3, STAGGERS[1])])
def test_processes_compiling_new_batch_sizes(tmp_path, processes, stagger):
    """Processes compiling batch sizes 1..4 on one empty cache at the same time."""
    env = _env(tmp_path)
    results = _start_together([_COMPILE_BATCHES] * processes, env, tmp_path, stagger)
    for res in results:
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr and res.stdout.strip() == "ok", res.stderr
    assert _exports(results) == 1
    blobs = sorted((tmp_path / "FASTSAL_CACHE_DIR" / "openvino").glob("*.blob"))
    assert len(blobs) == 4 and all(_blob_is_valid(b) for b in blobs)


def _blob_is_valid(blob: Path) -> bool:
    """Whether ``blob`` matches the SHA-256 and size its sidecar records."""
    side = json.loads(blob.with_name(blob.name + ".json").read_text())
    return side["sha256"] == file_sha256(blob) and side["size"] == blob.stat().st_size


# -- damaged cache files --------------------------------------------------------------------------
@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FASTSAL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return fastsal.load(backend="torch", threads=1).predict(example_image())


def _batch1_blob(cache: Path) -> Path:
    blobs = [b for b in (cache / "openvino").glob("*.blob")
             if json.loads(b.with_name(b.name + ".json").read_text())["batch"] == 1]
    assert len(blobs) == 1
    return blobs[0]


def test_a_blob_damaged_in_the_middle_is_rebuilt(cache, reference):
    fastsal.load(backend="openvino", threads=1)
    blob = _batch1_blob(cache)
    data = bytearray(blob.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
    blob.write_bytes(bytes(data))
    assert not _blob_is_valid(blob)
    with pytest.warns(EngineNotice, match=r"cached compiled model .*\.blob was damaged; rebuilt it"):
        p = fastsal.load(backend="openvino", threads=1)
    got = p.predict(example_image())
    assert np.abs(got - reference).max() < 1e-4 * reference.max()
    assert _blob_is_valid(blob)


@pytest.mark.parametrize("damage", ["missing", "garbage", "wrong-fields"])
def test_a_blob_without_a_valid_sidecar_is_rebuilt(cache, reference, damage):
    fastsal.load(backend="openvino", threads=1)
    blob = _batch1_blob(cache)
    side = blob.with_name(blob.name + ".json")
    if damage == "missing":
        side.unlink()
    elif damage == "garbage":
        side.write_bytes(b"\x00{not json")
    else:
        side.write_text(json.dumps({"sha256": 5, "size": "x"}))
    blob.write_bytes(b"not a compiled model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EngineNotice)
        p = fastsal.load(backend="openvino", threads=1)
    got = p.predict(example_image())
    assert np.abs(got - reference).max() < 1e-4 * reference.max()
    assert _blob_is_valid(blob)


def test_an_imported_blob_still_computes_in_f32(cache, reference):
    """OpenVINO applies INFERENCE_PRECISION_HINT at import: an import without it runs in bf16 on
    BF16 CPUs. The second load imports the blob; its hint must still be f32 and its maps exact."""
    fastsal.load(backend="openvino", threads=1)
    p = fastsal.load(backend="openvino", threads=1)
    assert p.runner.imported == {1}
    assert "CACHE_DIR" not in p.runner.config  # OpenVINO's own cache is the one that raced
    request, _ = p.runner.compiled[1]
    hint = str(request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")).lower()
    assert "f32" in hint or "float32" in hint
    assert np.abs(p.predict(example_image()) - reference).max() < 1e-4 * reference.max()
