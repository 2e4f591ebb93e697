"""int8 on OpenVINO with NNCF (fastsal.quantize): runs with the [openvino] extra alone (onnx and
onnxruntime absent), stays close to fp32 on real images, and the recipe choice is explicit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastsal import defaults, quantize
from fastsal.errors import FastSalError
from fastsal.export import read_sidecar
from fastsal.images import load_input as preprocess_image
from fastsal.models import load_model, shipped_weights
from fastsal.runtime import default_calibration_images, make_runner

needs_nncf = pytest.mark.skipif(not quantize.installed("nncf"), reason="the [openvino] extra (openvino, nncf) is not installed")
SRC = Path(__file__).resolve().parents[1] / "src"

# Runs in a fresh interpreter where `import onnx` / `import onnxruntime` fail and find_spec reports
# them missing: a `pip install 'fastsal[openvino]'` environment, whatever this one has installed.
WITHOUT_ONNX = r'''
import builtins, importlib.util, json, sys
BLOCKED = ("onnx", "onnxruntime")
real_import, real_find = builtins.__import__, importlib.util.find_spec
def no_onnx(name, *args, **kwargs):
    if name.split(".")[0] in BLOCKED:
        raise ImportError(f"No module named {name!r} (blocked by the test)")
    return real_import(name, *args, **kwargs)
builtins.__import__ = no_onnx
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCKED else real_find(name, *a)
import numpy as np, warnings
import fastsal
from fastsal.export import export, read_sidecar
from fastsal.models import load_model, shipped_weights
from fastsal.runtime import default_calibration_images
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    p = fastsal.load(precision="int8", input_size=(64, 96), threads=1)
    density = p.predict(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
model, meta = load_model(shipped_weights("default"))
xml = export(model, model.name, sys.argv[1] + "/m.xml", "openvino", (64, 96), int8=True,
             calibration_images=default_calibration_images()[:4])
print(json.dumps({"backend": p.backend, "precision": p.precision, "sum": float(density.sum()),
                  "notes": [str(w.message) for w in caught], "onnx_loaded": [m for m in BLOCKED if m in sys.modules],
                  "recipe": read_sidecar(xml)["quantization"]["recipe"]}))
'''


@needs_nncf
def test_int8_runs_without_onnxruntime(tmp_path):
    """Before: int8 needed onnxruntime's quantiser ('pip install fastsal[onnx]'), even on OpenVINO."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "FASTSAL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop(quantize.ENV, None)
    done = subprocess.run([sys.executable, "-c", WITHOUT_ONNX, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert (got["backend"], got["precision"]) == ("openvino", "int8"), got
    assert abs(got["sum"] - 1.0) < 1e-4 and got["onnx_loaded"] == [] and got["recipe"] == "nncf"
    assert not [n for n in got["notes"] if "instead" in n], got["notes"]  # no fallback to another engine


def density(logits: np.ndarray) -> np.ndarray:
    flat = logits.reshape(len(logits), -1).astype(np.float64)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@needs_nncf
def test_nncf_int8_agrees_with_fp32(tmp_path, osie_root):
    """The NNCF int8 graph's densities on held-out OSIE images correlate with fp32's: per-image CC
    >= 0.98 (measured >= 0.994 at 384x512 with the 100 shipped calibration images; a broken
    quantisation gives ~0), and its NSS on their fixations is within 2 % of fp32's (measured
    within 0.3 % on all 100 OSIE test images, README). 20 calibration images and 192x256 keep it quick."""
    from fastsal.data import load_dataset
    from fastsal.metrics import nss

    model, _ = load_model(shipped_weights(defaults.MODEL))
    size = (192, 256)
    fp32 = make_runner(model, "openvino", size, "fp32", threads=1, folder=tmp_path)
    int8 = make_runner(model, "openvino", size, "int8", threads=1, folder=tmp_path,
                       calibration_images=default_calibration_images()[:20])
    assert int8.precision == "int8"
    side = read_sidecar(int8.path)
    assert side["quantization"]["recipe"] == "nncf" and side["quantization"]["calibration_images"] == 20
    val = load_dataset("osie", osie_root, "val")[:6]
    x = np.stack([preprocess_image(s.image_path, size) for s in val])
    d32, d8 = density(fp32(x)), density(int8(x))
    ccs = [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(d32, d8)]
    assert min(ccs) >= 0.98, ccs
    n32 = np.mean([nss(d.reshape(size), s.fixations, shape=s.shape) for d, s in zip(d32, val)])
    n8 = np.mean([nss(d.reshape(size), s.fixations, shape=s.shape) for d, s in zip(d8, val)])
    assert abs(n8 - n32) <= 0.02 * n32, (n8, n32)


def test_recipe_choice(monkeypatch):
    monkeypatch.delenv(quantize.ENV, raising=False)
    monkeypatch.setattr(quantize, "installed", lambda recipe: True)
    assert quantize.openvino_recipe() == defaults.OPENVINO_INT8 == "nncf"
    monkeypatch.setenv(quantize.ENV, "onnxruntime")
    assert quantize.openvino_recipe() == "onnxruntime"
    monkeypatch.setenv(quantize.ENV, "qat")
    with pytest.raises(FastSalError, match=r"FASTSAL_OPENVINO_INT8='qat' is not an int8 recipe; use one of: nncf"):
        quantize.openvino_recipe()
    monkeypatch.delenv(quantize.ENV)
    monkeypatch.setattr(quantize, "installed", lambda recipe: recipe == "onnxruntime")  # [onnx] without nncf
    assert quantize.openvino_recipe() == "onnxruntime"
    monkeypatch.setattr(quantize, "installed", lambda recipe: False)
    with pytest.raises(FastSalError, match=r"needs NNCF: pip install 'fastsal\[openvino\]'") as info:
        quantize.openvino_recipe()
    assert "\n" not in str(info.value)
