"""Export a FastSal model to ONNX (fp32 or int8), OpenVINO IR or TorchScript, with a JSON sidecar.

    from fastsal.export import export
    export(model, "fastsal_a", "fastsal_a.onnx")                  # + fastsal_a.onnx.json
    fastsal.load("fastsal_a.onnx")                                 # a Predictor on the exported file
    fastsal.runtime.load_runner("fastsal_a.onnx")(batch)           # (N,3,H,W) f32 -> (N,1,H,W) f32

This module only writes files (and reads their sidecars back): running them is
:mod:`fastsal.runtime`'s job, and so is the cache of converted models (:mod:`fastsal.runtime.cache`
calls :func:`export` when a model file is missing).

What is exported is :func:`fastsal.models.fuse.fuse` of the model (BatchNorm folded, FastSal-C's
head fused): same outputs, faster graph. The graph's contract, also written to the sidecar:

- input ``image``: NCHW float32 RGB in [0, 1] at the exported size (H, W), batch 1 (or any batch
  with ``dynamic_batch=True``). ImageNet / EfficientNet-Lite normalisation is inside the graph.
  With ``dynamic_size=True`` (what ``fastsal export`` writes) H and W are free (multiples of 32):
  the sidecar's ``input_size`` is then a pixel budget and ``aspect`` its rule, exactly as the
  weights run in :class:`fastsal.predict.Predictor` (:func:`fastsal.images.fit_input_size`), so
  the file gives the checkpoint's maps.
- output ``logits``: (N, 1, H, W) float32 saliency logits, turned into a map exactly as
  :class:`fastsal.predict.Predictor` does (:data:`POSTPROCESS`, with the blur sigma the sidecar's
  ``meta.blur_sigma`` gives).

Without ``dynamic_size`` the size is fixed at export time (the model's resize-to-a-multiple-of-32
branch is traced away): resize images to the sidecar's ``input_size`` before feeding them.

int8 OpenVINO IR: by default converted from the PyTorch module and quantised by OpenVINO's NNCF
(:mod:`fastsal.quantize`; needs only the ``[openvino]`` extra; measured against the recipe below in
the README's precision section). int8 ONNX (and OpenVINO IR from it where NNCF is missing or
``$FASTSAL_OPENVINO_INT8=onnxruntime``): static post-training quantisation with
``onnxruntime.quantization``: QDQ format, int8 weights per output channel with a 7-bit range
(``reduce_range``), int8 activations with MinMax ranges calibrated on ``calibration_images``
(paths; preprocessed exactly as for prediction). The stem and first two blocks
(:data:`FLOAT_LAYERS`) and Concat stay in float. Why: on CPUs without VNNI (AVX2, and this
project's AMD EPYC) the fused u8s8 int8 convolutions saturate 16-bit intermediate sums, and the
layers that see the full-range image lost the most; with this recipe the shipped model's density
keeps NSS within 0.11 % and CC within 0.01 % of fp32 on OSIE val (per-image CC with fp32 >= 0.99),
against -2.2 % NSS for plain int8. Percentile/entropy calibration, asymmetric or uint8
activations did not help. The same file runs on OpenVINO (its int8 kernels, same accuracy). About 100 training
images calibrate well. The gain is size (~3.6x smaller) and, with int8 instructions (VNNI/AMX)
or on OpenVINO, speed.

Files are written atomically (temporary file in the same folder, then ``os.replace``): a crash
never leaves a half-written model or sidecar.
"""
from __future__ import annotations

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

from fastsal import defaults
from fastsal.errors import FastSalError
from fastsal.files import atomic_path, atomic_write, atomic_write_bytes, file_sha256
from fastsal.geometry import is_network_size
from fastsal.quantize import openvino_recipe, quantize_model, sidecar_entry

SIDECAR_FORMAT = "fastsal-export/1"
ONNX_OPSET = 17
FORMATS = ("onnx", "openvino", "torchscript")
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# What fastsal.predict does with the logits, step by step (tests hold the two together).
POSTPROCESS = (
    "1. density = softmax of the logits over all H*W pixels of each image, in float64. "
    "2. if meta.blur_sigma > 0: Gaussian blur of the density with that sigma in pixels at the input size "
    "(scipy.ndimage.gaussian_filter, mode='nearest', truncate 4), then renormalise to sum 1. "
    "2b. if meta.calibration (fitted on val by `fastsal calibrate`): with T = temperature, w = prior_weight and "
    "log prior = -((u - prior.x) / prior.sx)^2 / 2 - ((v - prior.y) / prior.sy)^2 / 2 at pixel centres "
    "u = (j + 0.5) / w_in, v = (i + 0.5) / h_in: form 'power': density = normalise(density^(1/T) * exp(w * log prior)); "
    "form 'mixture': density = (1 - w) normalise(density^(1/T)) + w normalise(exp(log prior)). "
    "3. to the original image size: bicubic resize of the float32 density (PIL Image.BICUBIC), "
    "clamp at 0, renormalise to sum 1. "
    "Viewable PNG: min-max scale of that density to 0..255 (rounded); overlay: 'inferno' colours blended at alpha 0.5."
)


# How an image becomes the graph's input, by (dynamic_size, aspect): the sidecar's input.resize.
INPUT_RULE = {
    (False, False): "antialiased bilinear to input_size (any aspect ratio is stretched)",
    (True, False): "antialiased bilinear to input_size (any aspect ratio is stretched); "
                   "other sizes (multiples of 32) may be fed as well",
    (True, True): "antialiased bilinear to the image's own aspect at about input_size's pixel count, each side "
                  "rounded to a multiple of 32 (at least 32; aspects clamped to 4:1) -- fastsal.images.fit_input_size",
}


class ExportError(FastSalError, ValueError):
    """Export impossible as asked, or an exported file / sidecar that cannot be used."""


# -- hashing ----------------------------------------------------------------
def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over a model's state_dict (:func:`fastsal.models.registry.tensors_sha256`).

    Independent of how (or whether) the weights were serialised, so an export can be traced back
    to the weights it came from.
    """
    from fastsal.models.registry import tensors_sha256

    return tensors_sha256(model.state_dict())


def sidecar_path(path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (a path already ending in ``.json`` is returned as is)."""
    path = Path(path)
    return path if path.suffix == ".json" else path.with_name(path.name + ".json")


# -- calibration ------------------------------------------------------------------------------
def _calibration_reader(paths: Sequence[str | Path], input_size: tuple[int, int]):
    from onnxruntime.quantization import CalibrationDataReader

    from fastsal.images import load_input

    class _Reader(CalibrationDataReader):
        """Feeds one preprocessed image at a time (batch 1, valid for static and dynamic graphs)."""

        def __init__(self) -> None:
            self._paths = iter(list(paths))

        def get_next(self) -> dict[str, np.ndarray] | None:
            p = next(self._paths, None)
            return None if p is None else {INPUT_NAME: load_input(p, input_size)[None]}

    return _Reader()


# -- export -----------------------------------------------------------------------------------
def export(
    model: nn.Module,
    name: str,
    path: str | Path,
    format: str = "onnx",
    input_size: tuple[int, int] = defaults.INPUT_SIZE,
    dynamic_batch: bool = False,
    int8: bool = False,
    calibration_images: Iterable[str | Path] | None = None,
    *,
    opset: int = ONNX_OPSET,
    fuse_model: bool = True,
    meta: dict[str, Any] | None = None,
    dynamic_size: bool = False,
    aspect: bool = False,
    int8_recipe: str | None = None,
) -> Path:
    """Export ``model`` (registered as ``name``) to ``path``; writes ``<path>.json`` beside it.

    ``format``: ``"onnx"``, ``"openvino"`` (IR: ``.xml`` + ``.bin``; ``int8`` quantised by NNCF,
    or the QDQ ONNX graph converted, see ``int8_recipe``) or ``"torchscript"``. ``input_size``: (H, W), multiples of 32.
    ``dynamic_batch``: a free batch dimension (otherwise batch 1). ``int8`` (ONNX or OpenVINO) needs
    ``calibration_images``: image paths (e.g. the OSIE training images). ``fuse_model`` (default
    True) exports :func:`fastsal.models.fuse.fuse` of the model. ``meta``: JSON-serialisable
    metadata stored in the sidecar as ``meta`` (pass the checkpoint's meta, e.g. ``blur_sigma``,
    so a runtime can post-process exactly as the PyTorch predictor does). ``dynamic_size``: free
    H and W (ONNX and OpenVINO; ``input_size`` is then the pixel budget), with ``aspect`` the rule
    that turns an image into an input size (recorded in the sidecar). ``int8_recipe`` (OpenVINO
    int8: ``"nncf"`` or ``"onnxruntime"``) defaults to :func:`fastsal.quantize.openvino_recipe`. Returns ``path``.
    """
    from fastsal.models.fuse import fuse

    path = Path(path)
    h, w = _check_request(format, input_size, meta, dynamic_size)
    aspect = bool(aspect and dynamic_size)  # one fixed size stretches every image
    calibration = _check_calibration(format, calibration_images) if int8 else []
    weights_sha = state_dict_sha256(model)
    net = _Graph(fuse(model) if fuse_model else copy.deepcopy(model).eval())  # the caller's model is untouched
    dummy = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    extra_files: dict[str, str] = {}
    recipe: str | None = None
    if format == "onnx":
        _export_onnx(net, path, dummy, dynamic_batch, opset, calibration if int8 else None, (h, w), dynamic_size)
    elif format == "openvino":
        if path.suffix != ".xml":
            raise ExportError(f"{path}: OpenVINO IR files end in .xml (the weights go to {path.stem}.bin beside it)")
        recipe = (int8_recipe or openvino_recipe()) if int8 else None
        _export_openvino(net, path, dummy, dynamic_batch, dynamic_size, opset, calibration if int8 else None, recipe)
        extra_files[path.with_suffix(".bin").name] = file_sha256(path.with_suffix(".bin"))
    else:
        _export_torchscript(net, path, dummy)
    sidecar = _sidecar(name, path, format, (h, w), dynamic_batch=dynamic_batch, dynamic_size=dynamic_size,
                       aspect=aspect, weights_sha=weights_sha, fused=fuse_model, opset=opset, meta=meta,
                       extra_files=extra_files)
    if int8:
        recipe = "nncf" if format == "openvino" and recipe == "nncf" else "onnxruntime"
        sidecar["precision"] = "int8"
        sidecar["quantization"] = sidecar_entry(recipe, len(calibration), calibration_digest(calibration))
    with atomic_write(sidecar_path(path), "w") as fh:
        fh.write(json.dumps(sidecar, indent=2) + "\n")
    return path


def _check_request(format: str, input_size: Sequence[int], meta: dict[str, Any] | None,
                   dynamic_size: bool) -> tuple[int, int]:
    """(H, W) of an export request, or :class:`ExportError` naming what cannot be exported."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    h, w = (int(v) for v in input_size)
    try:
        json.dumps(meta or {})
    except (TypeError, ValueError) as exc:
        raise ExportError(f"meta must be JSON-serialisable ({exc})") from None
    if not is_network_size((h, w)):
        raise ExportError(f"input size must be positive multiples of 32; got {h}x{w}")
    if dynamic_size and format == "torchscript":
        raise ExportError("a TorchScript export has a fixed input size; pass dynamic_size=False (fastsal export "
                          "--static) or export to onnx / openvino")
    return h, w


def _check_calibration(format: str, calibration_images: Iterable[str | Path] | None) -> list[Path]:
    """The int8 calibration images as paths, or :class:`ExportError` (none, missing, or TorchScript)."""
    calibration = [Path(p) for p in calibration_images] if calibration_images is not None else []
    if format == "torchscript":
        raise ExportError("int8 export is only available for format='onnx' or 'openvino'")
    if not calibration:
        raise ExportError("int8 export needs calibration_images (a list of image paths, e.g. OSIE train images)")
    missing = [str(p) for p in calibration if not p.is_file()]
    if missing:
        raise ExportError(f"calibration images not found: {', '.join(missing[:3])}")
    return calibration


def _export_openvino(net: nn.Module, path: Path, dummy: torch.Tensor, dynamic_batch: bool, dynamic_size: bool,
                     opset: int, calibration: list[Path] | None, recipe: str | None) -> None:
    """OpenVINO IR at ``path``: converted from the module, then quantised by NNCF (``recipe``
    ``"nncf"``), or the calibrated QDQ ONNX graph converted (other int8), or straight (fp32)."""
    size = (int(dummy.shape[2]), int(dummy.shape[3]))
    if calibration is not None and recipe == "nncf":  # converted from the PyTorch module, then quantised by NNCF
        _save_openvino_ir(net, path, example=dummy, dynamic_batch=dynamic_batch, dynamic_size=dynamic_size,
                          transform=lambda m: quantize_model(m, calibration, size))
    elif calibration is not None:  # the calibrated QDQ graph, converted
        with tempfile.TemporaryDirectory() as work:
            onnx_path = Path(work) / "model.onnx"
            _export_onnx(net, onnx_path, dummy, dynamic_batch, opset, calibration, size, dynamic_size)
            _save_openvino_ir(onnx_path, path)
    else:  # straight from the PyTorch module: needs no onnx package
        _save_openvino_ir(net, path, example=dummy, dynamic_batch=dynamic_batch, dynamic_size=dynamic_size)


def _sidecar(name: str, path: Path, format: str, size: tuple[int, int], *, dynamic_batch: bool, dynamic_size: bool,
             aspect: bool, weights_sha: str, fused: bool, opset: int, meta: dict[str, Any] | None,
             extra_files: dict[str, str]) -> dict[str, Any]:
    """The sidecar of a float export just written at ``path`` (int8 adds its precision and quantisation)."""
    from fastsal._version import __version__

    h, w = size
    n = "N" if dynamic_batch else 1
    hh, ww = ("H", "W") if dynamic_size else (h, w)
    return {
        "format": SIDECAR_FORMAT,
        "model": name,
        "file": path.name,
        "file_sha256": file_sha256(path),
        "extra_files": extra_files,
        "export_format": format,
        "precision": "fp32",
        "input_size": [h, w],
        "input": {
            "name": INPUT_NAME,
            "shape": [n, 3, hh, ww],
            "layout": "NCHW",
            "dtype": "float32",
            "color": "RGB",
            "range": [0.0, 1.0],
            "normalization": "inside the graph",
            "resize": INPUT_RULE[(dynamic_size, aspect)],
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": [n, 1, hh, ww],
            "dtype": "float32",
            "meaning": "saliency logits",
        },
        "dynamic_batch": bool(dynamic_batch),
        "dynamic_size": bool(dynamic_size),
        "aspect": aspect,
        "postprocess": POSTPROCESS,
        "weights_sha256": weights_sha,
        "weights_sha256_of": "model.state_dict() before fusion (sorted keys, dtype, shape, bytes)",
        "fused": bool(fused),
        "fastsal_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "opset": opset if format != "torchscript" else None,
        "meta": dict(meta or {}),
    }


def calibration_digest(paths: Sequence[str | Path]) -> str:
    """SHA-256 over the calibration images' contents, in order: what an int8 graph depends on."""
    h = hashlib.sha256()
    for p in paths:
        h.update(file_sha256(p).encode())
    return h.hexdigest()


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
        m: Any = self.model  # duck-typed: __init__ checked it has these four attributes
        return m.decoder(m.encoder((x - m.mean) / m.std))


def _export_onnx(
    net: nn.Module, path: Path, dummy: torch.Tensor, dynamic_batch: bool, opset: int,
    calibration: list[Path] | None, input_size: tuple[int, int], dynamic_size: bool = False,
) -> None:
    try:  # torch.onnx.export itself needs it
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'fastsal[onnx]'") from None
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory() as work:
        float_path = Path(work) / "float.onnx" if calibration is not None else tmp
        free = ({0: "N"} if dynamic_batch else {}) | ({2: "H", 3: "W"} if dynamic_size else {})
        axes = {INPUT_NAME: free, OUTPUT_NAME: dict(free)} if free else None
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


def _save_openvino_ir(source: Path | nn.Module, xml_path: Path, *, example: torch.Tensor | None = None,
                      dynamic_batch: bool = True, dynamic_size: bool = False,
                      transform: Callable[[Any], Any] | None = None) -> None:
    """An ONNX file or a traceable module -> OpenVINO IR (``.xml`` graph + ``.bin`` weights, fp32
    kept) at ``xml_path``.

    A module is converted by OpenVINO's PyTorch frontend (traced on ``example``), so the
    ``[openvino]`` extra needs no ``onnx``. ``transform`` (e.g. NNCF's int8 quantisation) maps the
    converted ``openvino.Model`` before it is saved. Both files are written under temporary names and
    renamed, weights first: a reader that finds the ``.xml`` finds its ``.bin``.
    """
    try:
        import openvino as ov
    except ImportError:
        raise ExportError("OpenVINO export needs openvino: pip install 'fastsal[openvino]'") from None
    bin_path = xml_path.with_suffix(".bin")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(xml_path) as tmp_xml, atomic_path(bin_path) as tmp_bin:  # inner (.bin) lands first
        with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=".fastsal-ir-") as work:
            staged = Path(work) / "model.xml"
            if isinstance(source, nn.Module):
                assert example is not None
                shape = [-1 if dynamic_batch else example.shape[0], example.shape[1],
                         *([-1, -1] if dynamic_size else example.shape[2:])]
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic: harmless here
                    converted = ov.convert_model(source, example_input=example, input=[ov.PartialShape(shape)])
            else:
                converted = ov.convert_model(str(source))
            if transform is not None:
                converted = transform(converted)
            ov.save_model(converted, str(staged), compress_to_fp16=False)
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
    """Serialised in memory, then written: torch's zip writer on a full disk aborts the process
    (its error escapes a C++ destructor), while atomic_write_bytes reports ENOSPC as one line."""
    import io

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch>=2.9 deprecates torch.jit
        traced = torch.jit.trace(net, (dummy,), check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    atomic_write_bytes(path, buf.getbuffer())


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
    for key in ("dynamic_size", "aspect"):  # absent before fastsal wrote free-size exports: a fixed size
        if not isinstance(data.setdefault(key, False), bool):
            raise ExportError(f"{side}: field {key!r} is not a bool")
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


__all__ = [
    "ExportError", "FORMATS", "POSTPROCESS", "calibration_digest", "export", "read_sidecar", "sidecar_path",
    "state_dict_sha256",
]
