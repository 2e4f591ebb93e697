"""Teachers: one or more saliency models, ensembled with test-time augmentation, as one density.

A teacher labels images that have no eye tracking (``fastsal pseudo-label``) or the augmented
views a student trains on (``fastsal train --teacher``, ``fastsal adapt``). Its sources are
anything :func:`fastsal.load` reads (a checkpoint from ``fastsal train``, a shipped model name,
an exported ``.onnx`` / ``.xml``) and any callable ``RGB image -> log-density``
(:class:`CallableTeacher`: a DeepGaze model you have locally, see its docstring).

**Views.** Each source runs on every image at each TTA scale (a pixel budget; each image keeps its
aspect where the source was trained so), and with ``flip`` also on the mirror image, whose map is
flipped back. Every view's log-density is resampled to the *teacher resolution* (the image's
aspect at :attr:`Teacher.resolution` pixels, default the largest budget any view ran at) before
they are combined.

**Combining: the mean of log-densities, renormalised** (a normalised geometric mean, a "product
of experts"), rather than the log of the mean density (a mixture, ``logmeanexp``). Both are
defensible; this one because:

- it is what the issue specifies and what averaging TTA views usually means: the mean of the
  networks' own outputs (log-softmax), a linear operation in the space the models are trained in;
- after renormalising it is never worse, in log-likelihood of any fixation, than the average
  member: log q = mean_i log p_i - log Z with Z = sum_x prod_i p_i(x)^(1/n) <= 1 (the AM-GM
  inequality), so -log Z >= 0 is added to every pixel. The mixture has the same guarantee
  (Jensen), so neither loses there;
- it keeps the sharp agreement of its members: a region only one member likes is down-weighted
  instead of kept as a separate bump (a mixture of a flip and its mirror keeps both members'
  mistakes), which suits views that differ only by resampling and mirroring. A student trained
  on broad mixtures learns broad maps, and NSS and AUC reward ranking, which sharp agreement helps.
  The cost: where members disagree strongly the geometric mean is more confident than any of
  them; ensembles of very different models may prefer the mixture (then compute it yourself
  from :meth:`Teacher.member_log_densities`).

**Output**: a float64 (h, w) natural-log density with logsumexp 0 (to rounding), at the teacher
resolution; ``fastsal pseudo-label`` stores it as float16. The teacher's own density is kept as
it is, centre bias included (no centre bias is removed or added).

**Identity**: :meth:`Teacher.identity` names the teacher and hashes (SHA-256) every source's
weights hash and map settings, the TTA, the resolution and the combination rule, so labels made
by another teacher are never mistaken for these.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.nn import functional as F

from fastsal import defaults
from fastsal.densities import normalise_log_density, resample_log_densities
from fastsal.errors import FastSalError, first_line
from fastsal.images import ImageLike, as_rgb_array, fit_input_size, resize_rgb
from fastsal.tta import TTA, TTAError

COMBINE = "mean of log-densities, renormalised (normalised geometric mean)"
CENTRE_BIAS = "none: the teacher's own density, centre bias included"
# The settings of a fastsal source that change its maps (the engine does not, within fp32).
MAP_SETTINGS = ("model", "weights_sha256", "input_size", "aspect", "precision", "blur_sigma", "calibration")
CALLABLE_PREFIX = "py:"


class TeacherError(FastSalError, ValueError):
    """A teacher source cannot be used (unknown model, unreadable file, bad callable); one line."""


class Member(Protocol):
    """One source of a teacher, as the teacher drives it."""

    label: str

    @property
    def native_size(self) -> tuple[int, int] | None:
        """The budget it runs at without TTA scales (None: the image's own); read-only here, so a
        member may hold a narrower type (a Predictor's is always a size)."""

    def size_for(self, shape: Sequence[int], budget: tuple[int, int] | None) -> tuple[int, int]:
        """(h, w) the source sees for an image or view of ``shape`` at pixel budget ``budget``."""

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """(3, h, w) float32 inputs in [0, 1] -> their (h', w') float64 log-densities (any size)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings that determine its maps (hashed into the teacher's identity)."""


class PredictorMember:
    """A :class:`fastsal.predict.Predictor` (a checkpoint, a shipped model or an exported file).

    Each image keeps its aspect at a budget when the weights were trained so (``aspect``); a
    squash-trained source sees exactly the budget (so give such sources scales of their training
    aspect, e.g. 4:3 192x256+288x384). The predictor keeps one prepared network per size.
    """

    def __init__(self, predictor: Any, label: str | None = None) -> None:
        self.predictor = predictor
        self.label = label or predictor.name
        self.native_size: tuple[int, int] = tuple(predictor.input_size)
        settings = predictor.settings()  # its maps' settings as loaded (its own input size)
        # An uncalibrated source leaves "calibration" out: teacher hashes (and labels) made before it existed stay valid.
        self.settings = {k: settings.get(k) for k in MAP_SETTINGS if k != "calibration" or settings.get(k) is not None}

    def size_for(self, shape: Sequence[int], budget: tuple[int, int] | None) -> tuple[int, int]:
        budget = budget or self.native_size
        return fit_input_size(shape, budget) if self.predictor.aspect else (int(budget[0]), int(budget[1]))

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.predictor.small_log_densities(inputs)

    def describe(self) -> dict[str, Any]:
        return {"source": self.label, **self.settings}


class CallableTeacher:
    """Any function ``RGB image -> log-density`` as a teacher source: the adapter for models that
    are not fastsal's, such as a DeepGaze you have locally.

    ``fn`` takes an (H, W, 3) uint8 RGB array and returns an (h, w) array of natural-log densities
    (any size with the image's aspect; it is renormalised and resampled, so an unnormalised
    log-saliency works too). ``name`` labels it; ``version`` must change whenever its output
    would (e.g. the SHA-256 of its weights file): it goes into the teacher's hash, which decides
    whether existing labels are reused. ``input_size``: a pixel budget the image is resized to
    (keeping its aspect) before ``fn`` sees it; ``None`` passes the image at its own size unless
    a TTA scale says otherwise.

    DeepGaze IIE from the ``deepgaze_pytorch`` package, with weights already on this machine
    (fastsal never downloads them; ``docs/deepgaze_teacher.py`` is this example as a file for
    ``--teacher py:docs/deepgaze_teacher.py:deepgaze``)::

        import numpy as np, torch, deepgaze_pytorch
        from scipy.ndimage import zoom
        from scipy.special import logsumexp
        from fastsal.teacher import CallableTeacher, Teacher
        from fastsal.tta import TTA

        model = deepgaze_pytorch.DeepGazeIIE(pretrained=True).eval()   # cached weights, no network
        centre = np.load("centerbias_mit1003.npy")                     # DeepGaze's log centre bias

        def deepgaze(rgb: np.ndarray) -> np.ndarray:
            h, w = rgb.shape[:2]
            cb = zoom(centre, (h / centre.shape[0], w / centre.shape[1]), order=0, mode="nearest")
            cb -= logsumexp(cb)
            x = torch.tensor(rgb.transpose(2, 0, 1)[None].copy(), dtype=torch.float32)
            with torch.no_grad():
                return model(x, torch.tensor(cb[None]))[0, 0].double().numpy()

        teacher = Teacher([CallableTeacher(deepgaze, name="deepgaze2e", version="<weights sha256>")],
                          tta=TTA.parse("flip"), resolution=(384, 512))
        log_density = teacher.log_density("photo.jpg")   # (384, 512) for a 4:3 photo; logsumexp 0
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], *, name: str, version: str,
                 input_size: Sequence[int] | None = None) -> None:
        if not callable(fn):
            raise TeacherError(f"teacher {name!r}: expected a function image -> log-density, got {type(fn).__name__}")
        if not isinstance(version, str) or not version:
            raise TeacherError(f"teacher {name!r}: pass version= (e.g. its weights' SHA-256): it goes into the "
                               "teacher hash that decides whether labels are reused")
        self.fn = fn
        self.label = str(name)
        self.version = version
        self.native_size = (int(input_size[0]), int(input_size[1])) if input_size is not None else None

    def size_for(self, shape: Sequence[int], budget: tuple[int, int] | None) -> tuple[int, int]:
        budget = budget or self.native_size
        return fit_input_size(shape, budget) if budget is not None else (int(shape[0]), int(shape[1]))

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for x in inputs:
            rgb = np.ascontiguousarray((np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8).transpose(1, 2, 0))
            try:
                logp = np.asarray(self.fn(rgb), dtype=np.float64)
            except FastSalError:
                raise
            except Exception as exc:
                raise TeacherError(f"teacher {self.label!r} failed: {type(exc).__name__}: {first_line(exc)}") from exc
            if logp.ndim != 2 or 0 in logp.shape or not np.isfinite(logp).all():
                raise TeacherError(f"teacher {self.label!r} returned {logp.dtype} {logp.shape}, not a finite (h, w) "
                                   "log-density")
            out.append(logp)
        return out

    def describe(self) -> dict[str, Any]:
        return {"source": self.label, "callable": True, "version": self.version,
                "input_size": list(self.native_size) if self.native_size else None}


class Teacher:
    """Sources ensembled over TTA views into one log-density per image (see the module docstring).

    ``sources``: names, paths, :class:`fastsal.predict.Predictor` objects, :class:`CallableTeacher`
    objects, ``py:FILE.py:FUNCTION`` strings (a function as for :class:`CallableTeacher`, its
    version the file's SHA-256) or a preset of :data:`fastsal.defaults.TEACHER_PRESETS`
    (``default-ensemble``, which brings its TTA unless ``tta`` is given). ``resolution``: the
    pixel budget of the output (default: the largest budget a view runs at, else
    :data:`fastsal.defaults.INPUT_SIZE` when no source has one). ``backend``,
    ``device`` and ``threads`` go to :func:`fastsal.load` (fp32 always: labels must be exact).
    """

    def __init__(self, sources: Sequence[Any] | str | Path, *, tta: TTA | str | None = None,
                 resolution: Sequence[int] | None = None, backend: str = defaults.AUTO,
                 device: str | torch.device = "cpu", threads: int | None = None, name: str | None = None) -> None:
        if isinstance(sources, (str, Path)):
            sources = [sources]
        sources = list(sources)
        if not sources:
            raise TeacherError("a teacher needs at least one source: {option} NAME|CHECKPOINT|FILE.onnx", option="teacher")
        if len(sources) == 1 and isinstance(sources[0], str) and sources[0] in defaults.TEACHER_PRESETS:
            preset, (sources, preset_tta) = sources[0], defaults.TEACHER_PRESETS[sources[0]]
            name = name or preset
            tta = preset_tta if tta is None else tta
        try:
            self.tta = tta if isinstance(tta, TTA) else TTA.parse(tta)
        except TTAError as exc:
            raise TeacherError(str(exc)) from None
        self.members: list[Member] = [_member(s, backend, device, threads) for s in sources]
        labels = [m.label for m in self.members]
        if len(set(labels)) != len(labels):
            raise TeacherError(f"teacher sources repeat ({', '.join(labels)}); name each source once")
        budgets = [b for m in self.members for b in self.budgets(m) if b is not None]
        if resolution is None:
            resolution = max(budgets, key=lambda b: (b[0] * b[1], b)) if budgets else defaults.INPUT_SIZE
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.name = name or "+".join(labels)

    # -- what the teacher is ------------------------------------------------------------------------
    def budgets(self, member: Member) -> tuple[tuple[int, int] | None, ...]:
        """The pixel budgets ``member`` runs at: the TTA scales, else its own input size."""
        return self.tta.scales or (member.native_size,)

    def output_size(self, shape: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the label of an image of ``shape``: its aspect at :attr:`resolution` pixels."""
        return fit_input_size(shape, self.resolution)

    def identity(self) -> dict[str, Any]:
        """Name, SHA-256 and every setting that shapes the labels (for manifests and checkpoints)."""
        settings = {
            "sources": [m.describe() for m in self.members],
            "tta": self.tta.describe(),
            "resolution": list(self.resolution),
            "combine": COMBINE,
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()
        inputs = {m.label: [list(b) if b else "image size" for b in self.budgets(m)] for m in self.members}
        return {"name": self.name, "sha256": digest, **settings, "input_sizes": inputs, "centre_bias": CENTRE_BIAS}

    @property
    def sha256(self) -> str:
        return self.identity()["sha256"]

    @property
    def runs_per_image(self) -> int:
        """Network runs per labelled image (sources x flips x scales): the teacher's cost, as a
        multiple of one source's."""
        return len(self.members) * self.tta.views

    def __repr__(self) -> str:
        h, w = self.resolution
        return f"Teacher({self.name!r}, sources={len(self.members)}, tta={str(self.tta)!r}, resolution={h}x{w})"

    # -- labelling images ---------------------------------------------------------------------------
    def log_density(self, image: ImageLike) -> np.ndarray:
        """One image (path, PIL image or array) -> (h, w) float64 log-density, logsumexp 0."""
        return self.log_densities([image])[0]

    def log_densities(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """Images of any sizes -> their labels at :meth:`output_size`, in order.

        Every view of every image is resized from the original pixels (antialiased, as
        :meth:`fastsal.predict.Predictor.preprocess` does), so labels do not depend on batching.
        """
        return self._combine([as_rgb_array(im) for im in images], self.members)

    def member_log_densities(self, image: ImageLike) -> dict[str, np.ndarray]:
        """Each source's own label of one image (its TTA views combined), keyed by source label:
        for inspecting an ensemble, or combining its members another way."""
        rgb = as_rgb_array(image)
        return {m.label: self._combine([rgb], [m])[0] for m in self.members}

    def _combine(self, rgbs: list[np.ndarray], members: Sequence[Member]) -> list[np.ndarray]:
        outs = [self.output_size(rgb.shape[:2]) for rgb in rgbs]
        acc = [np.zeros(size, dtype=np.float64) for size in outs]
        for member in members:
            for budget in self.budgets(member):
                inputs = [_to_input(resize_rgb(rgb, member.size_for(rgb.shape[:2], budget))) for rgb in rgbs]
                for flip in self._flips():
                    views = [np.ascontiguousarray(x[..., ::-1]) if flip else x for x in inputs]
                    for i, logp in enumerate(member.run(views)):
                        t = torch.from_numpy(np.ascontiguousarray(logp[:, ::-1] if flip else logp, dtype=np.float64))
                        acc[i] += resample_log_densities(t[None], outs[i])[0].numpy()
        n = len(members) * self.tta.views
        return [normalise_log_density(torch.from_numpy(a / n)).numpy() for a in acc]

    @torch.no_grad()
    def label_views(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) float views in [0, 1] (what a student sees) -> (N, h, w) float32 log-densities
        at the views' own size: on-the-fly distillation labels exactly the augmented pixels.

        Each source sees the views resized (antialiased bilinear) to its budget for their aspect.
        """
        x = x.detach().float().cpu()
        n, _, h, w = x.shape
        acc = torch.zeros(n, h, w, dtype=torch.float64)
        for member in self.members:
            for budget in self.budgets(member):
                size = member.size_for((h, w), budget)
                xs = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                                            antialias=True).clamp_(0.0, 1.0)
                for flip in self._flips():
                    v = xs.flip(-1) if flip else xs
                    logs = member.run(list(v.contiguous().numpy()))
                    t = torch.from_numpy(np.stack([np.asarray(lg, dtype=np.float64) for lg in logs]))
                    acc += resample_log_densities(t.flip(-1) if flip else t, (h, w))
        return normalise_log_density(acc / self.runs_per_image).float()

    def _flips(self) -> tuple[bool, ...]:
        return (False, True) if self.tta.flip else (False,)


def _to_input(rgb: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 -> (3, h, w) float32 in [0, 1], as :meth:`Predictor.preprocess`."""
    from fastsal.images import to_input

    return to_input(rgb)


def _member(source: Any, backend: str, device: str | torch.device, threads: int | None) -> Member:
    """A source as a :class:`Member`; a one-line :class:`TeacherError` for anything unusable."""
    if isinstance(source, (PredictorMember, CallableTeacher)):
        return source
    if hasattr(source, "small_log_densities") and hasattr(source, "settings"):  # a Predictor
        return PredictorMember(source)
    if isinstance(source, str) and source.startswith(CALLABLE_PREFIX):
        return load_callable(source[len(CALLABLE_PREFIX):])
    if not isinstance(source, (str, Path)):
        raise TeacherError(f"{{option}}: expected a model name, a checkpoint or exported file, or a callable, got "
                           f"{type(source).__name__}", option="teacher")
    if isinstance(source, str) and source in defaults.TEACHER_PRESETS:
        raise TeacherError(f"{{option}} {source}: a preset names a whole teacher; pass it alone", option="teacher")
    import warnings

    from fastsal.predict import load
    from fastsal.runtime.engines import EngineNotice

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EngineNotice)  # the engine does not change fp32 maps
            predictor = load(source, backend=backend, device=device, threads=threads)
    except FastSalError as exc:
        raise TeacherError(f"{{option}} {source}: " + first_line(exc), option="teacher") from None
    label = predictor.name if not isinstance(source, Path) and Path(str(source)).suffix == "" else Path(source).stem
    if label in ("best", "last"):  # runs/x/best.pt: the run folder says more than the file name
        label = f"{Path(source).parent.name}/{label}"
    return PredictorMember(predictor, label)


def load_callable(spec: str) -> CallableTeacher:
    """``FILE.py:FUNCTION`` -> a :class:`CallableTeacher` whose version is the file's SHA-256.

    The file is the user's own adapter code (e.g. ``docs/deepgaze_teacher.py``), run as a module.
    ``FUNCTION`` is the image -> log-density function itself, or a :class:`CallableTeacher` the
    module built (to set its own name, version or input size).
    """
    import importlib.util

    path_text, sep, func = spec.rpartition(":")
    path = Path(path_text)
    if not sep or not func or path.suffix != ".py":
        raise TeacherError(f"{{option}} py:{spec}: expected py:FILE.py:FUNCTION", option="teacher")
    if not path.is_file():
        raise TeacherError(f"{{option}} py:{spec}: {path} not found; pass the Python file holding the adapter",
                           option="teacher")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    module_spec = importlib.util.spec_from_file_location(f"fastsal_teacher_{digest[:12]}", path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    try:
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        raise TeacherError(f"{{option}} py:{spec}: {path} failed to import ({type(exc).__name__}: "
                           + first_line(exc) + ")", option="teacher") from None
    fn = getattr(module, func, None)
    if isinstance(fn, CallableTeacher):
        return fn
    if not callable(fn):
        raise TeacherError(f"{{option}} py:{spec}: {path} has no function {func!r}", option="teacher")
    return CallableTeacher(fn, name=func, version=f"sha256:{digest}")


__all__ = ["CENTRE_BIAS", "COMBINE", "CallableTeacher", "Member", "PredictorMember", "Teacher", "TeacherError",
           "load_callable"]
