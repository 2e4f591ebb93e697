"""Inference: images in, fixation-density maps out.

A :class:`Predictor` wraps a trained model with everything needed to use it on real images:
decoding (:mod:`fastsal.images`, so odd files behave the same as in training), resizing to the
model's input size, batching, and the FastSal authors' post-processing back to the image's own
size. The model call sits in one method, :meth:`Predictor._logits`, which runs the network on the
chosen backend (OpenVINO, ONNX Runtime or PyTorch: :mod:`fastsal.backends`); pre- and
post-processing are the same for all.

Output maps are probability distributions over pixels: non-negative, float32, summing to 1. That
is what a saliency map *means* (the chance that a fixation lands on each pixel), it is the form the
metrics expect, and unlike min-max-scaled images it can be compared across images. Use
:func:`to_png` and :func:`overlay` to look at one.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from fastsal.backends import AUTO, BACKENDS, BackendNotice, Logits, logits_runner, resolve_backend
from fastsal.images import as_rgb_array, resize_rgb
from fastsal.models import (
    FastSal,
    ModelError,
    list_models,
    load_model,
    shipped_weights,
)
from fastsal.models.fuse import fuse
from fastsal.models.registry import (
    DEFAULT_INPUT_SIZE,
    DEFAULT_MODEL,
    SHIPPED,
)

ImageLike = Union[str, Path, Image.Image, np.ndarray]

# Floor for log-densities: pixels whose probability was clamped to exactly 0 (bicubic undershoot)
# get log(float32 tiny) ~ -87.3 instead of -inf, so log-likelihood scores stay finite.
_LOG_FLOOR = float(np.log(np.finfo(np.float32).tiny))

__all__ = ["Predictor", "load", "to_png", "overlay", "colormap", "example_image", "ImageLike"]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def example_image() -> Path:
    """The bundled example photo (OSIE image 1017, MIT licence: ``assets/LICENSE-OSIE.txt``)."""
    path = ASSETS_DIR / "example.jpg"
    if not path.is_file():
        raise ModelError(f"{path}: bundled example missing; reinstall fastsal")
    return path


class Predictor:
    """A model ready for inference: ``predict(image)`` -> (H, W) float32 map summing to 1.

    ``input_size`` (H, W) is the resolution the network sees (default 192x256, the training
    size; OSIE's 4:3 aspect). Every image is resized to it, whatever its own aspect, as in training,
    and the map is resized back to the image's original size. Larger sizes give finer maps at
    quadratic cost; sizes need not be multiples of 32 (the model adapts internally).
    """

    def __init__(
        self,
        model: FastSal,
        name: str,
        *,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        device: str | torch.device = "cpu",
        meta: dict[str, Any] | None = None,
        weights_path: str | Path | None = None,
        blur_sigma: float | None = None,
        backend: str = "torch",
        threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        self.device = torch.device(device)
        self.backend = backend
        self.threads = threads
        self._source = model.eval()  # as trained: what graph runtimes export (and their cache key)
        # The torch backend runs an exactly equivalent rewrite: batch norm folded into convolutions
        # and FastSal-C's concatenation decoder reduced before upsampling (~10x faster for C).
        self.model = fuse(model.eval()).to(self.device)
        self.name = name
        self.meta = dict(meta or {})
        # Gaussian blur (px at input size) of the density before resizing: it removes the
        # PixelShuffle grain and was selected on the validation split (stored in the checkpoint).
        self.blur_sigma = float(self.meta.get("blur_sigma", 0.0) if blur_sigma is None else blur_sigma)
        if self.blur_sigma < 0:
            raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
        self.weights_path = Path(weights_path) if weights_path is not None else None
        self._runners: dict[tuple[int, int], Logits] = {}
        self.input_size = input_size

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the network sees; settable."""
        return self._input_size

    @input_size.setter
    def input_size(self, size: Sequence[int]) -> None:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"input_size must be (H, W), got {size!r}") from None
        if h <= 0 or w <= 0:
            raise ValueError(f"input_size must be positive, got {size!r}")
        self._input_size = (h, w)

    def __repr__(self) -> str:
        h, w = self.input_size
        return (f"Predictor(model={self.name!r}, input_size={h}x{w}, backend={self.backend!r}, "
                f"device={str(self.device)!r})")

    # -- the backend-specific part ------------------------------------------------------------
    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 RGB in [0, 1] -> (N, 1, H, W) float32 logits on ``self.backend``.

        Graph runtimes get one compiled model per input size, built on first use (and cached on
        disk, see :mod:`fastsal.backends`).
        """
        size = self.input_size
        run = self._runners.get(size)
        if run is None:
            run = self._runners[size] = logits_runner(self._source, self.backend, size, threads=self.threads,
                                                      fused=self.model)
        return run(batch)

    # -- pre- and post-processing -------------------------------------------------------------
    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, h, w) float32 in [0, 1] at the input size."""
        small = resize_rgb(rgb, self.input_size)
        return np.ascontiguousarray(small.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)

    def _log_density_small(self, batch: np.ndarray) -> np.ndarray:
        """Model log-density at input size: log-softmax over all pixels, (N, h, w) float64."""
        logits = self._logits(batch)
        n = logits.shape[0]
        flat = logits.reshape(n, -1).astype(np.float64)
        flat = flat - flat.max(axis=1, keepdims=True)
        flat = flat - np.log(np.exp(flat).sum(axis=1, keepdims=True))
        log_small = flat.reshape(n, *logits.shape[-2:])
        if self.blur_sigma > 0:
            prob = ndimage.gaussian_filter(np.exp(log_small), sigma=(0, self.blur_sigma, self.blur_sigma), mode="nearest")
            prob /= prob.sum(axis=(1, 2), keepdims=True)
            log_small = np.log(np.maximum(prob, np.finfo(np.float64).tiny))
        return log_small

    @staticmethod
    def _to_original(log_small: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """FastSal post-processing: softmax map -> bicubic resize -> clamp at 0 -> sum to 1.

        Resizing the *probability* map (not logits) follows the authors' code; bicubic can
        undershoot slightly below zero next to sharp peaks, hence the clamp before renormalising.
        """
        h, w = size
        prob = np.exp(log_small).astype(np.float32)
        if prob.shape != (h, w):
            prob = np.asarray(Image.fromarray(prob).resize((w, h), Image.BICUBIC), dtype=np.float32)
        prob = np.maximum(prob, np.float32(0.0))  # a writable copy (PIL's array is read-only) ...
        total = float(prob.sum(dtype=np.float64))
        if not np.isfinite(total) or total <= 0.0:  # cannot happen with finite logits; stay defined anyway
            return np.full((h, w), 1.0 / (h * w), dtype=np.float32)
        prob *= np.float32(1.0 / total)  # ... scaled in place: this runs per image at full resolution
        return prob

    # -- public API ---------------------------------------------------------------------------
    def predict_batch(
        self, images: Iterable[ImageLike], batch_size: int = 8, sizes: Sequence[tuple[int, int]] | None = None,
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
                raise ValueError(f"got {len(sizes)} sizes for {len(images)} images")
        logs = self._log_densities(images, batch_size)  # (log-density, the given image's size) pairs
        if sizes is not None:
            logs = ((ls, size) for (ls, _), size in zip(logs, sizes))
        return [self._to_original(ls, size) for ls, size in logs]

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
            return np.maximum(np.log(prob), np.float32(_LOG_FLOOR)).astype(np.float32)

    def _log_densities(self, images: Iterable[ImageLike], batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chunk: list[np.ndarray] = []
        sizes: list[tuple[int, int]] = []
        for image in images:
            rgb = as_rgb_array(image)
            chunk.append(self.preprocess(rgb))
            sizes.append(rgb.shape[:2])
            if len(chunk) == batch_size:
                yield from zip(self._log_density_small(np.stack(chunk)), sizes)
                chunk, sizes = [], []
        if chunk:
            yield from zip(self._log_density_small(np.stack(chunk)), sizes)


def load(
    name_or_path: str | Path = "default",
    *,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    blur_sigma: float | None = None,
    backend: str = AUTO,
) -> Predictor:
    """A ready :class:`Predictor`: ``fastsal.load().predict("photo.jpg")``.

    ``name_or_path``: ``"default"`` (the shipped model), a model name with shipped weights (see
    ``fastsal models``), or a checkpoint file written by ``fastsal train`` / ``save_checkpoint``.
    A ``Path`` is always taken as a file. Names without shipped weights raise
    :class:`~fastsal.models.ModelError`: random weights would give meaningless maps silently.

    ``backend``: ``"auto"`` (default: the fastest installed CPU runtime, OpenVINO > ONNX Runtime
    > PyTorch; PyTorch on GPUs), or ``"openvino"``, ``"onnxruntime"``, ``"torch"``. All give the
    same maps to float precision; a named backend that is not installed falls back with a
    :class:`~fastsal.backends.BackendNotice` warning. The graph runtimes compile the model once
    per input size and cache it on disk (:mod:`fastsal.backends`).

    ``threads``: CPU threads for the backend (torch: ``torch.set_num_threads``, process-wide);
    fewer when running several predictors side by side, None for the runtime's default.
    ``blur_sigma`` overrides the post-processing blur stored with the weights (pixels at the
    input size; 0 turns it off).
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
    chosen, notice = resolve_backend(backend, device)
    if notice:
        warnings.warn(notice, BackendNotice, stacklevel=2)
    if chosen == "torch" and threads is not None:
        torch.set_num_threads(int(threads))
    path, expected = _resolve(name_or_path)
    model, meta = load_model(path)
    if expected is not None and model.name != expected:
        raise ModelError(f"{path}: holds a {model.name!r} model, not {expected!r}; reinstall fastsal")
    predictor = Predictor(model, model.name, input_size=input_size, device=device, meta=meta, weights_path=path,
                          blur_sigma=blur_sigma, backend=chosen, threads=threads)
    predictor._logits(np.zeros((1, 3, *predictor.input_size), np.float32))  # compile now: errors surface at load
    return predictor


def _resolve(name_or_path: str | Path) -> tuple[Path, str | None]:
    """(checkpoint file, model name it must hold or None) for :func:`load`."""
    if not isinstance(name_or_path, Path):
        text = str(name_or_path)
        name = DEFAULT_MODEL if text == "default" else text
        if name in list_models():
            if name not in SHIPPED:
                raise ModelError(
                    f"no shipped weights for {name!r} (shipped: {', '.join(SHIPPED)}); "
                    f"pass a checkpoint file instead, e.g. fastsal.load('runs/x/best.pt') or --weights FILE"
                )
            return shipped_weights(name), name
        path = Path(text)
        if not path.exists() and not _looks_like_path(text):
            raise ModelError(
                f"unknown model {text!r}: not a model name ({', '.join(list_models())}) nor an existing "
                f"weights file"
            )
    else:
        path = name_or_path
    if path.is_dir():
        raise ModelError(f"{path}: is a folder; pass the checkpoint file inside it (e.g. {path / 'best.pt'})")
    return path, None  # read_checkpoint reports missing or malformed files


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text).suffix.lower() in (".pt", ".pth", ".ckpt", ".bin")


# -- viewing ------------------------------------------------------------------------------------

# Matplotlib's 'inferno' (perceptually uniform, readable in grayscale and by colour-blind viewers),
# sampled at 33 points; linear interpolation reproduces the 256 entries to within 1.5/255.
_INFERNO_ANCHORS = np.array([
    (0, 0, 4), (4, 3, 18), (11, 7, 36), (21, 11, 55), (33, 12, 74), (46, 10, 90),
    (60, 9, 101), (74, 12, 107), (87, 16, 109), (99, 20, 110), (112, 25, 110), (125, 30, 109),
    (137, 34, 106), (150, 39, 102), (163, 43, 97), (175, 49, 92), (187, 55, 85), (198, 62, 77),
    (209, 70, 68), (219, 79, 59), (227, 89, 50), (235, 101, 40), (241, 113, 30), (246, 127, 20),
    (249, 141, 10), (251, 156, 6), (252, 171, 15), (251, 186, 31), (249, 202, 50), (245, 217, 73),
    (242, 232, 101), (243, 245, 134), (252, 255, 164),
], dtype=np.float64)
_INFERNO = np.stack(
    [np.interp(np.arange(256), np.linspace(0, 255, len(_INFERNO_ANCHORS)), _INFERNO_ANCHORS[:, c]) for c in range(3)],
    axis=1,
).round().astype(np.uint8)


def to_png(prob_map: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W) uint8, min-max scaled to 0..255: for viewing, not for metrics.

    Scaling discards the absolute level (two images' PNGs are not comparable); keep the float map
    (``.npy``) for analysis. A constant map gives all zeros.
    """
    m = np.asarray(prob_map)
    if m.dtype != np.float32:  # float32 maps (what predict returns) are scaled in float32: ~10x faster
        m = m.astype(np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {m.shape}")
    lo, hi = float(np.min(m)), float(np.max(m))
    if not hi > lo:
        return np.zeros(m.shape, dtype=np.uint8)
    scaled = (m - m.dtype.type(lo)) * m.dtype.type(255.0 / (hi - lo)) + m.dtype.type(0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def colormap(values: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 through the 'inferno' lookup table (no matplotlib needed)."""
    return _INFERNO[np.asarray(values, dtype=np.uint8)]


def overlay(image_rgb: ImageLike, prob_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image blended with the colour-mapped saliency map: (H, W, 3) uint8.

    ``(1 - alpha) * image + alpha * inferno(to_png(map))``: dark where nobody looks, bright
    yellow at the peaks. ``image_rgb`` is anything :func:`fastsal.images.as_rgb_array` accepts;
    a map of another size is resized (bilinear) to the image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = as_rgb_array(image_rgb)
    m = np.ascontiguousarray(prob_map, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {m.shape}")
    h, w = rgb.shape[:2]
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m).resize((w, h), Image.BILINEAR), dtype=np.float32)
    heat = colormap(to_png(m)).astype(np.float32)
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
