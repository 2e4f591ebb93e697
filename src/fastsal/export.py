"""Export a FastSal model to ONNX (fp32 or int8) or TorchScript, with a JSON sidecar.

    from fastsal.export import export, load_exported
    export(model, "fastsal_a", "fastsal_a.onnx")                  # + fastsal_a.onnx.json
    run = load_exported("fastsal_a.onnx", threads=2)               # onnxruntime session
    logits = run(batch)                                            # (N,3,H,W) f32 -> (N,1,H,W) f32

What is exported is :func:`fastsal.models.fuse.fuse` of the model (BatchNorm folded, FastSal-C's
head fused): same outputs, faster graph. The graph's contract, also written to the sidecar:

- input ``image``: NCHW float32 RGB in [0, 1] at the exported size (H, W), batch 1 (or any batch
  with ``dynamic_batch=True``). ImageNet / EfficientNet-Lite normalisation is inside the graph.
- output ``logits``: (N, 1, H, W) float32 saliency logits. Density: softmax over all H*W pixels,
  then (for the original image size) bicubic resize of the density, clamp at 0, renormalise
  to sum 1 -- exactly as :class:`fastsal.predict.Predictor` does.

The size is fixed at export time (the model's resize-to-a-multiple-of-32 branch is traced away):
resize images to the sidecar's ``input.size`` before feeding them.

int8 (ONNX, and OpenVINO IR from the same graph): static post-training quantisation with
``onnxruntime.quantization``: QDQ format, int8 weights per output channel with a 7-bit range
(``reduce_range``), int8 activations with MinMax ranges calibrated on ``calibration_images``
(paths; preprocessed exactly as for prediction). The stem and first two blocks
(:data:`FLOAT_LAYERS`) and Concat stay in float. Why: on CPUs without VNNI (AVX2, and this
project's AMD EPYC) the fused u8s8 int8 convolutions saturate 16-bit intermediate sums, and the
layers that see the full-range image lost the most; with this recipe the shipped model's density
keeps NSS within 0.11 % and CC within 0.01 % of fp32 on OSIE val (per-image CC with fp32 >= 0.99),
against -2.2 % NSS for plain int8. Percentile/entropy calibration, asymmetric or uint8
activations did not help. The same file runs on OpenVINO (its int8 kernels, same accuracy);
OpenVINO's NNCF quantiser, tried with the same float layers, did no better. About 100 training
images calibrate well. The gain is size (~3.6x smaller) and, with int8 instructions (VNNI/AMX)
or on OpenVINO, speed.

Files are written atomically (temporary file in the same folder, then ``os.replace``): a crash
never leaves a half-written model or sidecar.
"""
from __future__ import annotations

from fastsal.errors import FastSalError

import copy
import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from fastsal.files import atomic_path, atomic_write, file_sha256

SIDECAR_FORMAT = "fastsal-export/1"
ONNX_OPSET = 17
FORMATS = ("onnx", "openvino", "torchscript")
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
POSTPROCESS = (
    "logits -> density: softmax over all H*W pixels of each image (sums to 1); for the original "
    "image size resize the density with bicubic interpolation, clamp at 0 and renormalise to sum 1. "
    "Viewable map: sigmoid(logits), min-max to [0, 255], resize, 5x5 Gaussian blur."
)


class ExportError(FastSalError, ValueError):
    """Export impossible as asked, or an exported file / sidecar that cannot be used."""


# -- hashing ----------------------------------------------------------------
def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over a model's state_dict (sorted keys; each key, dtype, shape and raw bytes).

    Independent of how (or whether) the weights were serialised, so an export can be traced back
    to the weights it came from.
    """
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (a path already ending in ``.json`` is returned as is)."""
    path = Path(path)
    return path if path.suffix == ".json" else path.with_name(path.name + ".json")


# -- calibration ------------------------------------------------------------------------------
def preprocess_image(path: str | Path, input_size: tuple[int, int]) -> np.ndarray:
    """Image file -> (3, H, W) float32 RGB in [0, 1] at ``input_size``, as the predictor does."""
    from fastsal.images import load_rgb, resize_rgb

    small = resize_rgb(load_rgb(path), tuple(input_size))
    return np.ascontiguousarray(small.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def _calibration_reader(paths: Sequence[str | Path], input_size: tuple[int, int]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        """Feeds one preprocessed image at a time (batch 1, valid for static and dynamic graphs)."""

        def __init__(self) -> None:
            self._paths = iter(list(paths))

        def get_next(self) -> dict[str, np.ndarray] | None:
            p = next(self._paths, None)
            return None if p is None else {INPUT_NAME: preprocess_image(p, input_size)[None]}

    return _Reader()


# -- export -----------------------------------------------------------------------------------
def export(
    model: nn.Module,
    name: str,
    path: str | Path,
    format: str = "onnx",
    input_size: tuple[int, int] = (192, 256),
    dynamic_batch: bool = False,
    int8: bool = False,
    calibration_images: Iterable[str | Path] | None = None,
    *,
    opset: int = ONNX_OPSET,
    fuse_model: bool = True,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Export ``model`` (registered as ``name``) to ``path``; writes ``<path>.json`` beside it.

    ``format``: ``"onnx"``, ``"openvino"`` (IR: ``.xml`` + ``.bin``, converted from the ONNX graph;
    ``int8`` gives the QDQ graph, which OpenVINO runs with int8 kernels) or ``"torchscript"``. ``input_size``: (H, W), multiples of 32.
    ``dynamic_batch``: a free batch dimension (otherwise batch 1). ``int8`` (ONNX only) needs
    ``calibration_images``: image paths (e.g. the OSIE training images). ``fuse_model`` (default
    True) exports :func:`fastsal.models.fuse.fuse` of the model. ``meta``: JSON-serialisable
    metadata stored in the sidecar as ``meta`` (pass the checkpoint's meta, e.g. ``blur_sigma``,
    so a runtime can post-process exactly as the PyTorch predictor does). Returns ``path``.
    """
    from fastsal import __version__
    from fastsal.models.fuse import fuse

    path = Path(path)
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    h, w = (int(v) for v in input_size)
    try:
        json.dumps(meta or {})
    except (TypeError, ValueError) as exc:
        raise ExportError(f"meta must be JSON-serialisable ({exc})") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ExportError(f"input size must be positive multiples of 32; got {h}x{w}")
    calibration = [Path(p) for p in calibration_images] if calibration_images is not None else []
    if int8:
        if format == "torchscript":
            raise ExportError("int8 export is only available for format='onnx' or 'openvino'")
        if not calibration:
            raise ExportError("int8 export needs calibration_images (a list of image paths, e.g. OSIE train images)")
        missing = [str(p) for p in calibration if not p.is_file()]
        if missing:
            raise ExportError(f"calibration images not found: {', '.join(missing[:3])}")

    weights_sha = state_dict_sha256(model)
    net = _Graph(fuse(model) if fuse_model else copy.deepcopy(model).eval())  # the caller's model is untouched
    dummy = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))

    extra_files: dict[str, str] = {}
    if format == "onnx":
        _export_onnx(net, path, dummy, dynamic_batch, opset, calibration if int8 else None, (h, w))
    elif format == "openvino":
        if path.suffix != ".xml":
            raise ExportError(f"{path}: OpenVINO IR files end in .xml (the weights go to {path.stem}.bin beside it)")
        with tempfile.TemporaryDirectory() as work:
            onnx_path = Path(work) / "model.onnx"
            _export_onnx(net, onnx_path, dummy, dynamic_batch, opset, calibration if int8 else None, (h, w))
            _save_openvino_ir(onnx_path, path)
        extra_files[path.with_suffix(".bin").name] = file_sha256(path.with_suffix(".bin"))
    else:
        _export_torchscript(net, path, dummy)

    sidecar = {
        "format": SIDECAR_FORMAT,
        "model": name,
        "file": path.name,
        "file_sha256": file_sha256(path),
        "extra_files": extra_files,
        "export_format": format,
        "precision": "int8" if int8 else "fp32",
        "input_size": [h, w],
        "input": {
            "name": INPUT_NAME,
            "shape": ["N" if dynamic_batch else 1, 3, h, w],
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "range": [0.0, 1.0],
            "normalization": "inside the graph",
            "resize": "antialiased bilinear to input_size (any aspect ratio is stretched)",
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["N" if dynamic_batch else 1, 1, h, w],
            "dtype": "float32",
            "meaning": "saliency logits",
        },
        "dynamic_batch": bool(dynamic_batch),
        "postprocess": POSTPROCESS,
        "weights_sha256": weights_sha,
        "weights_sha256_of": "model.state_dict() before fusion (sorted keys, dtype, shape, bytes)",
        "fused": bool(fuse_model),
        "fastsal_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "opset": opset if format != "torchscript" else None,
        "meta": dict(meta or {}),
    }
    if int8:
        sidecar["quantization"] = {
            "tool": "onnxruntime.quantization.quantize_static",
            "format": "QDQ",
            "weights": "int8 with 7-bit range (reduce_range), per output channel, symmetric",
            "activations": "int8, per tensor, MinMax calibration",
            "not_quantized": ["Concat", "encoder.features.0-2 (stem and first two blocks)"],
            "calibration_images": len(calibration),
        }
    with atomic_write(sidecar_path(path), "w") as fh:
        fh.write(json.dumps(sidecar, indent=2) + "\n")
    return path


def cached_export(
    model: nn.Module,
    name: str,
    folder: str | Path,
    input_size: tuple[int, int],
    *,
    int8: bool = False,
    calibration_images: Iterable[str | Path] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """A dynamic-batch ONNX export of ``model`` in ``folder``, made only if not already there.

    The file name carries the first 16 hex digits of :func:`state_dict_sha256`, the size and the
    precision, and an existing file is reused only if its sidecar confirms all three (and its
    SHA-256): changed weights can never be served a stale graph. Export is deterministic and
    atomic, so two processes racing to fill the cache both end with the same valid file.
    """
    sha = state_dict_sha256(model)
    h, w = (int(v) for v in input_size)
    precision = "int8" if int8 else "fp32"
    path = Path(folder) / f"{name}-{sha[:16]}-{h}x{w}-{precision}.onnx"
    try:
        side = read_sidecar(path)
        if side["weights_sha256"] == sha and side["input_size"] == [h, w] and side["dynamic_batch"] \
                and side["precision"] == precision and side.get("meta", {}) == dict(meta or {}):
            return path
    except ExportError:
        pass
    return export(model, name, path, "onnx", (h, w), dynamic_batch=True, int8=int8,
                  calibration_images=calibration_images, meta=meta)


class _Graph(nn.Module):
    """What is traced: normalisation, encoder, decoder -- FastSal.forward minus its Python-side
    shape checks and resize-to-a-multiple-of-32 branch (export sizes are multiples of 32, where
    that branch is the identity), which tracing cannot follow."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for attr in ("encoder", "decoder", "mean", "std"):
            if not hasattr(model, attr):
                raise ExportError(f"can only export FastSal models (missing {attr!r}); got {type(model).__name__}")
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.decoder(m.encoder((x - m.mean) / m.std))


def _export_onnx(
    net: nn.Module, path: Path, dummy: torch.Tensor, dynamic_batch: bool, opset: int,
    calibration: list[Path] | None, input_size: tuple[int, int],
) -> None:
    try:
        import onnx
    except ImportError:
        if calibration is not None:
            raise ExportError("int8 export needs the 'onnx' package: pip install 'fastsal[onnx]'") from None
        onnx = None
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory() as work:
        float_path = Path(work) / "float.onnx" if calibration is not None else tmp
        axes = {INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}} if dynamic_batch else None
        with torch.no_grad(), warnings.catch_warnings():
            # Harmless: the traced shape slices (x.shape[-2:]) are not constant-folded.
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            # The TorchScript-based exporter is deprecated in torch>=2.9 but needs no onnxscript and
            # handles these graphs fully; dynamo=True would need the onnxscript package.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                net, (dummy,), str(float_path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False,
            )
        if onnx is not None:  # the checker is optional; onnxruntime / OpenVINO validate on load anyway
            onnx.checker.check_model(str(float_path))
        if calibration is not None:
            try:
                from onnxruntime.quantization import (
                    QuantFormat,
                    QuantType,
                    quantize_static,
                )
                from onnxruntime.quantization.shape_inference import quant_pre_process
            except ImportError:
                raise ExportError("int8 export needs onnxruntime: pip install 'fastsal[onnx]'") from None
            pre = Path(work) / "pre.onnx"
            quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
            graph = onnx.load(str(pre)).graph
            quantize_static(
                str(pre), str(tmp), _calibration_reader(calibration, input_size),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=_int8_op_types(),
                nodes_to_exclude=[n.name for n in graph.node if FLOAT_LAYERS.match(n.name)],
            )


def _save_openvino_ir(onnx_path: Path, xml_path: Path) -> None:
    """ONNX file -> OpenVINO IR (``.xml`` graph + ``.bin`` weights, fp32 kept) beside ``xml_path``.

    Both files are written under temporary names and renamed, weights first: a reader that finds
    the ``.xml`` finds its ``.bin``.
    """
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("OpenVINO export needs openvino: pip install 'fastsal[openvino]'") from None
    bin_path = xml_path.with_suffix(".bin")
    with atomic_path(xml_path) as tmp_xml, atomic_path(bin_path) as tmp_bin:  # inner (.bin) lands first
        with tempfile.TemporaryDirectory(dir=xml_path.parent) as work:
            staged = Path(work) / "model.xml"
            ov.save_model(ov.convert_model(str(onnx_path)), str(staged), compress_to_fp16=False)
            os.replace(staged.with_suffix(".bin"), tmp_bin)
            os.replace(staged, tmp_xml)


# Layers kept in float in int8 exports: the stem and the first two blocks see the full-range
# normalised image, and quantising them caused almost all of the int8 error (measured one layer at
# a time on OSIE val: stem alone min per-image CC 0.885 with fp32; any other single layer >= 0.984).
# They are ~3 % of the MACs.
FLOAT_LAYERS = re.compile(r"^/encoder/features\.[012]/")


def _int8_op_types() -> list[str] | None:
    """onnxruntime's default set of quantised op types minus Concat.

    Concat of inputs with different scales dequantises per channel; OpenVINO (2026.4) then fails
    to compile the following DepthToSpace (PixelShuffle). Leaving Concat in float costs nothing
    measurable in onnxruntime (same latency, same outputs on OSIE images) and keeps the int8 file
    loadable by OpenVINO.
    """
    try:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    except ImportError:  # registry layout changed: fall back to onnxruntime's default
        return None
    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - {"Concat"})


def _export_torchscript(net: nn.Module, path: Path, dummy: torch.Tensor) -> None:
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch>=2.9 deprecates torch.jit
        traced = torch.jit.trace(net, (dummy,), check_trace=False)
        torch.jit.save(traced, str(tmp))


# -- reading back -----------------------------------------------------------------------------
_REQUIRED = {
    "format": str, "model": str, "file": str, "file_sha256": str, "export_format": str,
    "precision": str, "input_size": list, "input": dict, "output": dict, "dynamic_batch": bool,
    "postprocess": str, "weights_sha256": str, "fastsal_version": str,
}


def read_sidecar(path: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """Read and validate the sidecar of an exported model (``path``: the model or its ``.json``).

    ``verify`` also checks that the model file exists and its SHA-256 matches. Raises
    :class:`ExportError` with a one-line reason otherwise.
    """
    side = sidecar_path(path)
    if not side.is_file():
        raise ExportError(f"{side}: sidecar not found; re-export the model with fastsal")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{side}: unreadable sidecar ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise ExportError(f"{side}: not a fastsal export sidecar (expected format {SIDECAR_FORMAT!r})")
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise ExportError(f"{side}: field {key!r} missing or not a {kind.__name__}")
    size = data["input_size"]
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ExportError(f"{side}: input_size must be [H, W]; got {size!r}")
    if data["export_format"] not in FORMATS:
        raise ExportError(f"{side}: unknown export_format {data['export_format']!r}")
    if verify:
        model_file = side.with_name(data["file"])
        if not model_file.is_file():
            raise ExportError(f"{model_file}: exported model file missing (named by {side.name})")
        if file_sha256(model_file) != data["file_sha256"]:
            raise ExportError(f"{model_file}: SHA-256 does not match its sidecar; the file changed, re-export it")
        for extra, sha in (data.get("extra_files") or {}).items():
            extra_file = side.with_name(extra)
            if not extra_file.is_file():
                raise ExportError(f"{extra_file}: file missing (named by {side.name}); re-export the model")
            if file_sha256(extra_file) != sha:
                raise ExportError(f"{extra_file}: SHA-256 does not match its sidecar; the file changed, re-export it")
    return data


class ExportedModel:
    """A loaded export: ``__call__((N, 3, H, W) float32 in [0, 1]) -> (N, 1, H, W) float32 logits``.

    Static-batch exports are run one image at a time, so any N works. ``sidecar`` holds the
    metadata; ``input_size`` the (H, W) the images must be resized to.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], sidecar: dict[str, Any], backend: str) -> None:
        self._run = run
        self.sidecar = sidecar
        self.backend = backend
        self.input_size = tuple(sidecar["input_size"])
        self.name = sidecar["model"]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != self.input_size:
            h, w = self.input_size
            raise ExportError(f"exported model expects (N, 3, {h}, {w}) input; got {tuple(batch.shape)}")
        if self.sidecar["dynamic_batch"] or batch.shape[0] == 1:
            return self._run(batch)
        return np.concatenate([self._run(batch[i:i + 1]) for i in range(batch.shape[0])])

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"ExportedModel({self.name!r}, {self.sidecar['export_format']}/{self.sidecar['precision']}, {h}x{w})"


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU InferenceSession with ``threads`` intra-op threads (None: ORT default)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running ONNX models needs onnxruntime: pip install 'fastsal[onnx]'") from None
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _openvino_core_config(threads: int | None, cache_dir: str | Path | None) -> tuple[Any, dict[str, Any]]:
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("running models with OpenVINO needs openvino: pip install 'fastsal[openvino]'") from None
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return ov.Core(), config


def openvino_model(path: str | Path, threads: int | None = None, cache_dir: str | Path | None = None,
                   batch: int | None = None):
    """An OpenVINO CPU ``CompiledModel`` for an ONNX or IR (``.xml``) file.

    Latency hint (inference one request at a time), ``threads`` inference threads (None: all
    cores). ``cache_dir`` turns on OpenVINO's model cache: the compiled blob is stored there,
    keyed by OpenVINO on the model and the configuration, and later loads skip compilation.
    ``batch`` fixes a dynamic batch dimension: static shapes compile to faster kernels (FastSal-A
    batch 1: 14.6 ms against 16.0 ms with a dynamic batch on 2 cores).
    """
    core, config = _openvino_core_config(threads, cache_dir)
    try:
        model = core.read_model(str(path))
        if batch is not None and model.input(0).get_partial_shape()[0].is_dynamic:
            shape = model.input(0).get_partial_shape()
            shape[0] = int(batch)
            model.reshape({model.input(0): shape})
        return core.compile_model(model, "CPU", config)
    except RuntimeError as exc:
        detail = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise ExportError(f"{path}: OpenVINO cannot compile this model ({detail[:200]})") from None


def onnx_runner(path: str | Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x) -> logits`` for an ONNX file on onnxruntime's CPU provider."""
    sess = onnx_session(path, threads)

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    return run


def openvino_runner(
    path: str | Path, threads: int | None = None, cache_dir: str | Path | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x) -> logits`` for an ONNX or IR file on OpenVINO's CPU plugin (not for concurrent
    calls from several threads). A dynamic-batch model is compiled once per batch size met (static
    shapes run faster; with ``cache_dir`` each compilation is cached on disk)."""
    first = openvino_model(path, threads, cache_dir, batch=1)  # errors surface here, not at the first call
    compiled: dict[int, Any] = {1: (first.create_infer_request(), first.output(0))}

    def run(x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if n not in compiled:
            model = openvino_model(path, threads, cache_dir, batch=n)
            compiled[n] = (model.create_infer_request(), model.output(0))
        request, output = compiled[n]
        return request.infer({0: x})[output]  # share_outputs=False (default): a fresh array per call

    return run


def load_exported(
    path: str | Path, threads: int | None = None, *, verify: bool = True, backend: str | None = None,
) -> ExportedModel:
    """Load an exported model and its sidecar, ready to run.

    ONNX files run on onnxruntime (``backend="onnxruntime"``, the default) or OpenVINO
    (``backend="openvino"``), OpenVINO IR files on OpenVINO, TorchScript files on torch.jit.
    """
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix("")
    side = read_sidecar(path, verify=verify)
    model_file = sidecar_path(path).with_name(side["file"])
    kind = side["export_format"]
    allowed = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",), "torchscript": ("torchscript",)}[kind]
    backend = backend or allowed[0]
    if backend not in allowed:
        raise ExportError(f"{model_file}: a {kind} export runs on {' or '.join(allowed)}, not {backend!r}")
    if backend == "onnxruntime":
        return ExportedModel(onnx_runner(model_file, threads), side, backend)
    if backend == "openvino":
        return ExportedModel(openvino_runner(model_file, threads), side, backend)
    if threads is not None:
        torch.set_num_threads(int(threads))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(model_file), map_location="cpu").eval()

    def run_ts(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).float().numpy()

    return ExportedModel(run_ts, side, "torchscript")


__all__ = [
    "ExportError", "ExportedModel", "cached_export", "export", "load_exported", "onnx_runner", "onnx_session", "openvino_model",
    "openvino_runner", "preprocess_image",
    "read_sidecar", "sidecar_path", "state_dict_sha256",
]
