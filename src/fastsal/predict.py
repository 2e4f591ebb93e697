"""Inference: images in, fixation-density maps out.

A :class:`Predictor` wraps a :class:`~fastsal.runtime.Runner` (the network on OpenVINO, ONNX
Runtime or PyTorch, at fp32, bf16 or int8) with everything needed to use it on real images. The
pipeline has three public steps, which :mod:`fastsal.batch` and :mod:`fastsal.video` reuse to
overlap them with decoding and writing:

1. :meth:`Predictor.preprocess`: an (H, W, 3) uint8 image -> (3, h, w) float32 in [0, 1] at the
   input size (decoding lives in :mod:`fastsal.images`, so odd files behave as in training);
2. :meth:`Predictor.small_log_density`: a batch -> the model's log-density at the input size
   (log-softmax over pixels, then the post-processing blur the weights were selected with);
3. :func:`postprocess`: that log-density -> a map at the image's own size (the FastSal authors'
   bicubic resize of the probabilities, clamped and renormalised).

Output maps are probability distributions over pixels: non-negative, float32, summing to 1. That
is what a saliency map *means* (the chance that a fixation lands on each pixel), it is the form the
metrics expect, and unlike min-max-scaled images it can be compared across images. Use
:func:`fastsal.viewing.to_png` and :func:`fastsal.viewing.overlay` to look at one.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from fastsal import defaults
from fastsal.calibration import Calibration
from fastsal.calibration import apply as apply_calibration
from fastsal.calibration import from_meta as calibration_from_meta
from fastsal.cpu import check_threads
from fastsal.densities import LOG_FLOOR  # pixels clamped to 0 (bicubic undershoot) get ~-87.3, not -inf
from fastsal.errors import FastSalError
from fastsal.geometry import size_pair
from fastsal.images import ImageLike, as_rgb_array, fit_input_size, load_resized, resize_rgb, to_input
from fastsal.models import (
    ModelError,
    list_models,
    load_model,
    model_choices,
)
from fastsal.models.registry import WEIGHTS, architecture, resolve_name, tensors_sha256, weights_for
from fastsal.runtime.build import build_runner, load_runner, make_runner
from fastsal.runtime.engines import AUTO, EngineNotice
from fastsal.runtime.runners import Runner, StaticBatch

EXPORT_SUFFIXES = (".onnx", ".xml")
# Maps larger than this (16 MP) are resized a band of rows at a time: a whole-image PIL resize of a
# 48 MP float map holds three 192 MB copies at once. Bands give the same values to ~1e-5 relative
# (the box arithmetic rounds differently), far below the 1e-4 engine tolerance.
RESIZE_BAND_PIXELS = 1 << 24

__all__ = ["RESIZE_BAND_PIXELS", "PredictError", "Predictor", "example_image", "load", "postprocess"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


class PredictError(FastSalError, ValueError):
    """The network produced something that is not a map (non-finite logits: damaged weights)."""


def example_image() -> Path:
    """The bundled example photo (OSIE image 1017, MIT licence: ``assets/LICENSE-OSIE.txt``)."""
    path = ASSETS_DIR / "example.jpg"
    if not path.is_file():
        raise ModelError(f"{path}: bundled example missing; reinstall fastsal")
    return path


def postprocess(log_small: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """FastSal post-processing: input-size log-density -> (H, W) float32 map at ``size``, summing to 1.

    The *probability* map is resized (bicubic), as in the authors' code, not the logits; bicubic
    can undershoot slightly below zero next to sharp peaks, hence the clamp before renormalising.
    Pure: the same for every engine, and usable on any log-density (e.g. a video frame's).
    """
    h, w = (int(v) for v in size)
    small = np.exp(log_small).astype(np.float32)
    if small.shape == (h, w):
        prob = small
    elif h * w <= RESIZE_BAND_PIXELS:
        prob = np.array(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    else:  # camera-sized photos: resize a band of rows at a time into one float32 array
        prob = np.empty((h, w), dtype=np.float32)
        source, (sh, sw) = Image.fromarray(small), small.shape
        rows = max(1, (1 << 20) // w)  # 4 MB bands
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            band = source.resize((w, r1 - r0), Image.Resampling.BICUBIC, box=(0.0, r0 * sh / h, float(sw), r1 * sh / h))
            prob[r0:r1] = np.asarray(band)
    np.maximum(prob, np.float32(0.0), out=prob)  # in place: this runs per image at full resolution
    total = float(prob.sum(dtype=np.float64))
    if not np.isfinite(total) or total <= 0.0:  # cannot happen with finite logits; stay defined anyway
        return np.full((h, w), 1.0 / (h * w), dtype=np.float32)
    prob *= np.float32(1.0 / total)
    return prob


class Predictor:
    """A model ready for inference: ``predict(image)`` -> (H, W) float32 map summing to 1.

    ``runner``: the network on an engine (:mod:`fastsal.runtime`); ``input_size`` (H, W) is the
    resolution it sees (the weights' training size). Every image is resized to it (or, with
    ``aspect``, to its own aspect at that many pixels), and the map back to the image's size.
    ``rebuild(size)`` makes a runner for another input size, so ``input_size`` can be changed.
    ``blur_sigma``: Gaussian blur (pixels at the input size) of the density before resizing; it
    removes the PixelShuffle grain and was selected on the validation split (stored with the
    weights, ``meta["blur_sigma"]``). ``calibration``: a temperature and centre-bias prior fitted on
    val (``meta["calibration"]``, :mod:`fastsal.calibration`), applied after the blur; None (weights
    without one) leaves the maps exactly as they were.

    ``aspect``: ``input_size`` is a pixel budget and each image keeps its own aspect at about that
    many pixels (:meth:`input_size_for`, sides multiples of 32), as the models are trained; a
    portrait photo is then not squashed into a landscape input. The network is prepared once per
    distinct size (a handful: 4:3, 3:4, 16:9, ...), kept for reuse.
    """

    #: How many per-size runners an aspect-preserving predictor keeps (each holds a compiled graph).
    MAX_RUNNERS = 16

    def __init__(
        self,
        runner: Runner,
        name: str,
        *,
        meta: dict[str, Any] | None = None,
        weights_path: str | Path | None = None,
        weights_sha256: str | None = None,
        blur_sigma: float | None = None,
        rebuild: Callable[[tuple[int, int]], Runner] | None = None,
        aspect: bool = False,
    ) -> None:
        self.runner = runner
        self.aspect = bool(aspect)
        self._by_size: dict[tuple[int, int], Runner] = {}
        self.name = name
        self.meta = dict(meta or {})
        self.blur_sigma = check_blur(self.meta.get("blur_sigma", 0.0) if blur_sigma is None else blur_sigma)
        self.calibration: Calibration | None = calibration_from_meta(self.meta)
        self.weights_path = Path(weights_path) if weights_path is not None else None
        self.weights_sha256 = weights_sha256
        self._rebuild = rebuild

    @property
    def backend(self) -> str:
        """The engine the network runs on: ``openvino``, ``onnxruntime`` or ``torch``."""
        return self.runner.backend

    @property
    def precision(self) -> str:
        """``fp32`` (PyTorch's maps on every engine), ``bf16`` or ``int8``."""
        return self.runner.precision

    @property
    def device(self) -> torch.device:
        return getattr(self.runner, "device", torch.device("cpu"))

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the network sees; settable (the engine is prepared again for a new size)."""
        return tuple(self.runner.input_size)  # type: ignore[return-value]

    @input_size.setter
    def input_size(self, size: Sequence[int]) -> None:
        h, w = size_pair(size, PredictError, "input_size")
        if (h, w) == self.input_size:
            return
        if self._rebuild is None:
            raise PredictError(f"this predictor's network has a fixed input size {self.input_size}; load it again "
                               f"with input_size=({h}, {w})")
        self.runner = self._rebuild((h, w))
        self._by_size.clear()

    def input_size_for(self, shape: Sequence[int]) -> tuple[int, int]:
        """(h, w) the network sees for an image of ``shape`` (H, W): ``input_size``, or with
        ``aspect`` the image's aspect at ``input_size``'s pixel count (:func:`fastsal.images.fit_input_size`)."""
        return fit_input_size(shape, self.input_size) if self.aspect else self.input_size

    def runner_for(self, size: Sequence[int]) -> Runner:
        """The network prepared for input ``size`` (h, w): the main runner, or one made for it and kept.

        ``aspect`` decides which sizes :meth:`preprocess` makes; a batch of another size, passed
        on purpose (a teacher's test-time scales, :mod:`fastsal.teacher`), gets its own runner
        either way, so alternating sizes never prepares the network again.
        """
        size = (int(size[0]), int(size[1]))
        if size == self.input_size:
            return self.runner
        runner = self._by_size.get(size)
        if runner is None:
            if self._rebuild is None:
                raise PredictError(f"this predictor's network has a fixed input size {self.input_size}; pass "
                                   f"{self.input_size[0]}x{self.input_size[1]} inputs")
            if len(self._by_size) >= self.MAX_RUNNERS:
                self._by_size.pop(next(iter(self._by_size)))
            runner = self._by_size[size] = self._rebuild(size)
        return runner

    def settings(self) -> dict[str, Any]:
        """What shapes a map: model, weights, input size, engine, precision, blur and calibration
        (for manifests and reports: outputs made with other settings are not the same maps)."""
        return {
            "model": self.name,
            "weights_sha256": self.weights_sha256,
            "input_size": list(self.input_size),
            "backend": self.backend,
            "precision": self.precision,
            "blur_sigma": self.blur_sigma,
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "aspect": self.aspect,
        }

    def __repr__(self) -> str:
        h, w = self.input_size
        return (f"Predictor(model={self.name!r}, input_size={h}x{w}, aspect={self.aspect}, backend={self.backend!r}, "
                f"precision={self.precision!r}, device={str(self.device)!r})")

    # -- the pipeline's steps -------------------------------------------------------------------
    def read(self, image: ImageLike, *, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """(the image at :meth:`input_size_for` it, as (h, w, 3) uint8; its own (H, W)): the one
        decoding step of every entry point (predict, batch, crop, serve, jobs), so one file gives
        one map whichever way it comes in.

        ``image``: a path, a binary file object (an upload), a PIL image or an array, with EXIF
        orientation, colour modes, 16-bit, alpha and CMYK handled by :mod:`fastsal.images`, and
        ``max_pixels`` its size limit. Files and streams are decoded by
        :func:`fastsal.images.load_resized`: a JPEG at least twice the input size on its short side
        is decoded at a reduced DCT scale (a proper low-pass reduction, much faster on camera-sized
        photos); smaller images (the benchmark datasets') decode in full, as before.
        """
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if isinstance(image, str) or hasattr(image, "read"):
            return load_resized(image, self.input_size_for, max_pixels=max_pixels)  # type: ignore[arg-type]
        rgb = as_rgb_array(image, max_pixels=max_pixels)
        shape = (int(rgb.shape[0]), int(rgb.shape[1]))
        return resize_rgb(rgb, self.input_size_for(shape)), shape

    def preprocess(self, rgb: np.ndarray, shape: Sequence[int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, h, w) float32 in [0, 1] at :meth:`input_size_for` the image.

        ``shape``: the original image's (H, W) when ``rgb`` was already reduced
        (:func:`fastsal.images.load_resized` with :meth:`input_size_for`), which keeps its size.
        """
        return to_input(rgb, self.input_size_for(shape if shape is not None else rgb.shape[:2]))

    def small_log_density(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, h, w) float32 in [0, 1] -> the model's log-density at the input size, (N, h, w)
        float64: log-softmax over all pixels, then the post-processing blur, then the calibration
        (:func:`fastsal.calibration.apply`), the same on every engine. All images of a batch
        have one size; :meth:`small_log_densities` takes a list of any sizes."""
        logits = self.runner_for(batch.shape[-2:])(batch)
        if not np.isfinite(logits).all():
            where = f" ({self.weights_path})" if self.weights_path is not None else ""
            raise PredictError(f"the network gave non-finite values: the weights{where} are damaged (NaN or inf); "
                               f"retrain or reinstall them")
        n = logits.shape[0]
        flat = logits.reshape(n, -1).astype(np.float64)
        flat = flat - flat.max(axis=1, keepdims=True)
        flat = flat - np.log(np.exp(flat).sum(axis=1, keepdims=True))
        log_small = flat.reshape(n, *logits.shape[-2:])
        if self.blur_sigma > 0:
            prob = ndimage.gaussian_filter(np.exp(log_small), sigma=(0, self.blur_sigma, self.blur_sigma), mode="nearest")
            prob /= prob.sum(axis=(1, 2), keepdims=True)
            log_small = np.log(np.maximum(prob, np.finfo(np.float64).tiny))
        return apply_calibration(log_small, self.calibration)

    def small_log_densities(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`small_log_density` for (3, h, w) inputs of possibly different sizes, in order:
        each size is one batch through the network."""
        out: list[np.ndarray | None] = [None] * len(inputs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            groups.setdefault(tuple(x.shape), []).append(i)
        for idx in groups.values():
            for i, ls in zip(idx, self.small_log_density(np.stack([inputs[i] for i in idx]))):
                out[i] = ls
        return out  # type: ignore[return-value]

    postprocess = staticmethod(postprocess)

    # -- public API ---------------------------------------------------------------------------
    def predict_batch(
        self, images: Iterable[ImageLike], batch_size: int = defaults.BATCH_SIZE,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[np.ndarray]:
        """Maps for many images, ``batch_size`` at a time through the network.

        Each image may be a path, a PIL image or an (H, W[, 3|4]) array; each map has its image's
        size, or ``sizes[i]`` = (H, W) when given: pass images already reduced to the input size
        (:func:`fastsal.images.load_resized`, much faster to decode) with their original sizes.
        Batching only changes speed, not results. A file that cannot be decoded raises
        :class:`fastsal.images.ImageError` naming it (the CLI skips such files instead).
        """
        if sizes is not None:
            images, sizes = list(images), [(int(h), int(w)) for h, w in sizes]
            if len(sizes) != len(images):
                raise PredictError(f"got {len(sizes)} sizes for {len(images)} images")
        logs = self._log_densities(images, batch_size)  # (log-density, the given image's size) pairs
        if sizes is not None:
            logs = ((ls, size) for (ls, _), size in zip(logs, sizes))
        return [postprocess(ls, size) for ls, size in logs]

    def predict(self, image: ImageLike) -> np.ndarray:
        """(H, W) float32 fixation-probability map at the image's original size; sums to 1."""
        return self.predict_batch([image], batch_size=1)[0]

    def log_density(self, image: ImageLike) -> np.ndarray:
        """(H, W) float32 natural-log density at the original size: ``exp`` of it is :meth:`predict`.

        For log-likelihood evaluation. Pixels where the map is exactly 0 (clamped bicubic
        undershoot) get log(float32 tiny) ~ -87.3 rather than -inf.
        """
        prob = self.predict(image)
        with np.errstate(divide="ignore"):
            return np.maximum(np.log(prob), np.float32(LOG_FLOOR)).astype(np.float32)

    def _log_densities(self, images: Iterable[ImageLike], batch_size: int):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise PredictError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        chunk: list[np.ndarray] = []
        sizes: list[tuple[int, int]] = []
        for image in images:
            small, size = self.read(image)
            chunk.append(self.preprocess(small, size))
            sizes.append(size)
            if len(chunk) == batch_size:
                yield from zip(self.small_log_densities(chunk), sizes)
                chunk, sizes = [], []
        if chunk:
            yield from zip(self.small_log_densities(chunk), sizes)


def check_blur(sigma: Any) -> float:
    """A post-processing blur sigma as float if finite and in [0, 50] px, else :class:`PredictError`."""
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise PredictError(f"blur_sigma must be a number of pixels, got {sigma!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 50.0:
        raise PredictError(f"blur_sigma must be between 0 and 50 pixels at the input size, got {sigma!r}")
    return value


def load(
    name_or_path: str | Path = "default",
    *,
    input_size: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    blur_sigma: float | None = None,
    backend: str = AUTO,
    precision: str = defaults.PRECISION,
    calibration_images: Sequence[str | Path] | None = None,
    aspect: bool | None = None,
    calibrated: bool = True,
) -> Predictor:
    """A ready :class:`Predictor`: ``fastsal.load().predict("photo.jpg")``.

    ``name_or_path``: ``"default"`` (the shipped model), a model name with shipped weights (see
    ``fastsal models``), a checkpoint written by ``fastsal train`` / ``save_checkpoint``, or a file
    written by ``fastsal export`` (``.onnx``, ``.xml``; int8 included). A ``Path`` is always taken
    as a file. Names without shipped weights raise :class:`~fastsal.models.ModelError`: random
    weights would give meaningless maps silently.

    ``backend``: ``"auto"`` (default: the fastest installed engine that can prepare the model,
    OpenVINO > ONNX Runtime > PyTorch, each fallback announced by a
    :class:`~fastsal.runtime.EngineNotice` warning; PyTorch on GPUs), or ``"openvino"``,
    ``"onnxruntime"``, ``"torch"``. ``precision``: ``"fp32"`` (default; every engine gives PyTorch's
    maps within 1e-4 of the peak), ``"bf16"`` (CPUs with AVX512_BF16/AMX, or GPUs) or ``"int8"``
    (calibrated on ``calibration_images``, default the shipped OSIE set). The graph engines convert
    the model once per weights, size and precision and cache it on disk (:mod:`fastsal.runtime`).

    ``input_size``: (H, W) the network sees: default the size the weights were trained at (their
    :class:`~fastsal.models.registry.Weights` spec, a checkpoint's training config, else 192x256;
    an exported file's own size). ``aspect``: treat it as a pixel budget, each image keeping its own
    aspect (:meth:`Predictor.input_size_for`); default as the weights were trained, else True; an
    exported file by the rule its sidecar records (a fixed-size graph: at its size unless ``aspect=True``).
    ``threads``: CPU threads for the engine (torch: ``torch.set_num_threads``, process-wide).
    ``blur_sigma`` overrides the post-processing blur stored with the weights (pixels at the
    input size; 0 turns it off). ``calibrated=False`` leaves out the calibration the weights carry
    (temperature and centre-bias prior, :mod:`fastsal.calibration`): the network's own density, for
    a metric that penalises centre bias by design (shuffled AUC) or to compare with older maps.
    """
    predictor = _load(name_or_path, input_size=input_size, device=device, threads=threads, blur_sigma=blur_sigma,
                      backend=backend, precision=precision, calibration_images=calibration_images, aspect=aspect)
    if not calibrated:
        predictor.calibration = None
    return predictor


def _load(name_or_path: str | Path, *, input_size: Sequence[int] | None, device: str | torch.device,
          threads: int | None, blur_sigma: float | None, backend: str, precision: str,
          calibration_images: Sequence[str | Path] | None, aspect: bool | None) -> Predictor:
    """:func:`load` before the calibration choice."""
    if threads is not None:
        check_threads(threads, error=PredictError)
    if blur_sigma is not None:
        blur_sigma = check_blur(blur_sigma)
    if input_size is not None:
        input_size = _check_input_size(input_size)
    path, expected = _resolve(name_or_path)
    if path.suffix.lower() in EXPORT_SUFFIXES or Path(f"{path}.json").is_file():  # exported (TorchScript too)
        return _load_exported(path, input_size, threads, blur_sigma, backend, precision, aspect)
    model, meta = load_model(path)
    trained = training_geometry(meta, WEIGHTS.get(expected) if expected else None)
    size = tuple(input_size) if input_size is not None else trained[0]
    aspect = trained[1] if aspect is None else bool(aspect)
    if expected is not None and model.name != architecture(expected):
        raise ModelError(f"{path}: holds a {model.name!r} model, not {architecture(expected)!r}; reinstall fastsal")
    if threads is not None:
        torch.set_num_threads(int(threads))
    runner, notes = build_runner(model, backend, size, precision, threads=threads, device=device,
                                 calibration_images=calibration_images)
    for note in notes:
        warnings.warn(note, EngineNotice, stacklevel=2)

    def rebuild(new_size: tuple[int, int]) -> Runner:
        return make_runner(model, runner.backend, new_size, runner.precision, threads=threads, device=device,
                           calibration_images=calibration_images)

    # shipped weights go by their own name (two sets of one architecture stay apart in manifests and the server)
    return Predictor(runner, expected or model.name, meta=meta, weights_path=path,
                     weights_sha256=tensors_sha256(model.state_dict()), blur_sigma=blur_sigma, rebuild=rebuild, aspect=aspect)


def _check_input_size(size: Any) -> tuple[int, int]:
    """``size`` as (H, W) with whole sides in :data:`~fastsal.defaults.INPUT_SIDE_RANGE`, as the
    command line checks it: a huge size otherwise ended in a MemoryError on the first image."""
    lo, hi = defaults.INPUT_SIDE_RANGE
    try:
        h, w = size
        ok = all(not isinstance(v, bool) and int(v) == v and lo <= v <= hi for v in (h, w))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise PredictError(f"input_size must be (height, width) with each side a whole number in {lo}..{hi}; "
                           f"got {size!r}")
    return int(h), int(w)


def training_geometry(meta: dict[str, Any], spec: Any = None) -> tuple[tuple[int, int], bool]:
    """(input size, aspect) the weights were trained at: from their shipped spec, else the size a
    calibration was fitted at (it holds there), else from the training config a checkpoint carries
    (``meta["config"]``), else the defaults."""
    if spec is not None:
        return tuple(spec.input_size), bool(spec.aspect)
    calib = calibration_from_meta(meta)  # a malformed one: CalibrationError naming the key
    if calib is not None and calib.input_size is not None and calib.aspect is not None:
        return calib.input_size, calib.aspect
    config = meta.get("config") or meta.get("training_config") or {}
    raw: Any = config.get("input_size") if isinstance(config, dict) else None  # anything; checked below
    try:
        size = (int(raw[0]), int(raw[1]))
    except (TypeError, ValueError, IndexError):
        size = defaults.INPUT_SIZE
    aspect = config.get("aspect", False) if isinstance(config, dict) and "input_size" in config else defaults.ASPECT
    return size, bool(aspect)


def _load_exported(path: Path, input_size: Sequence[int] | None, threads: int | None, blur_sigma: float | None,
                   backend: str, precision: str, aspect: bool | None) -> Predictor:
    """A Predictor on a file from ``fastsal export``: engine, precision, size and aspect rule come
    from the file (a fixed-size graph: every image at that size unless ``aspect=True``)."""
    file_precision = None if precision == defaults.PRECISION else precision  # fp32 asked: take the file's own

    def runner_for(size: Sequence[int] | None) -> StaticBatch:
        return load_runner(path, backend, file_precision, threads=threads, input_size=size)

    runner = runner_for(input_size)
    side = runner.sidecar
    aspect = bool(side["aspect"]) if aspect is None else bool(aspect)
    return Predictor(runner, side["model"], meta=side.get("meta") or {}, weights_path=path,
                     weights_sha256=side["weights_sha256"], blur_sigma=blur_sigma, rebuild=runner_for, aspect=aspect)


def _resolve(name_or_path: str | Path) -> tuple[Path, str | None]:
    """(checkpoint file, model name it must hold or None) for :func:`load`."""
    if not isinstance(name_or_path, (str, Path)):
        raise ModelError(f"expected a model name or a weights path, got {type(name_or_path).__name__} "
                         f"{name_or_path!r}; e.g. fastsal.load('default')")
    if not isinstance(name_or_path, Path):
        text = str(name_or_path)
        if not text.strip():  # Path('') is the current folder
            raise ModelError(f"model name or weights path is empty ({text!r}); pass e.g. fastsal.load('default')")
        name = resolve_name(text)
        if name in WEIGHTS:
            return weights_for(name).path, name
        if name in list_models():  # an architecture without shipped weights (those returned above)
            raise ModelError(
                f"no shipped weights for {name!r} (shipped: {', '.join(WEIGHTS) or 'none'}); "
                "pass a checkpoint file as {option} instead, e.g. runs/x/best.pt", option="name_or_path"
            )
        path = Path(text)
        if not path.exists() and not _looks_like_path(text):
            raise ModelError(
                f"unknown model {text!r}: not a model name ({model_choices()}) nor an existing "
                f"weights file"
            )
    else:
        path = name_or_path
    if path.is_dir():
        raise ModelError(f"{path}: is a folder; pass the checkpoint file inside it (e.g. {path / 'best.pt'})")
    return path, None  # read_checkpoint reports missing or malformed files


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text).suffix.lower() in (".pt", ".pth", ".ckpt", ".bin", *EXPORT_SUFFIXES)
