"""``fastsal crop`` on the job layer: every aspect's crop of many images, the boxes in a manifest.

Beside the other commands' tasks (maps in :mod:`fastsal.batch`, videos in :mod:`fastsal.video`),
apart from :mod:`fastsal.cropping`, which is the crop search alone (any map, one image) and needs
no job layer, no files and no model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fastsal.cropping import DEFAULT_MAX_SIDE, Aspect, Crop, CropError, _check_scales, crop_boxes, parse_aspects
from fastsal.images import ImageError
from fastsal.jobs import MAP_SETTINGS, Item, Job, Result, Task, image_source, input_entry

__all__ = ["CROP_FORMATS", "CROP_SETTINGS", "CropTask", "crop_paths", "draw_crops", "report_path", "run"]

#: Image outputs of ``fastsal crop``: the cropped pictures as JPEG or PNG, or only the JSON of boxes.
CROP_FORMATS: tuple[str, ...] = ("jpg", "png", "json")
REPORT_FORMAT = "fastsal-crops/1"  # the v1 report, still read; new ones are fastsal.jobs.MANIFEST_FORMAT
# The settings that change which boxes are chosen; a rerun with others is refused, not mixed in.
CROP_SETTINGS = ("scale", "min_scale", "keep", "max_side")


def report_path(out: str | Path, index: int = 0, count: int = 1) -> Path:
    """``OUT/crops.json``, or ``OUT/crops-<i>-of-<n>.json`` for one of several shards."""
    return Path(out) / ("crops.json" if count == 1 else f"crops-{index}-of-{count}.json")


def crop_paths(out: str | Path, stem: Path, aspects: Sequence[Aspect], fmt: str, show: bool) -> dict[str, Path]:
    """{aspect label or ``"show"``: file} for one input: ``<stem>_16x9.jpg`` per aspect (none for
    ``json``) and ``<stem>_crops.jpg`` (the overlay with the boxes) with ``show``."""
    out = Path(out)
    paths = {} if fmt == "json" else {a.label: out / stem.with_name(f"{stem.name}_{a.tag}.{fmt}") for a in aspects}
    if show:
        paths["show"] = out / stem.with_name(f"{stem.name}_crops.jpg")
    return paths


def _earlier_entries(out: Path) -> dict[str, dict[str, Any]]:
    """Every entry of earlier runs' reports in ``out`` (any sharding), by input, for resuming."""
    import json

    entries: dict[str, dict[str, Any]] = {}
    for path in sorted(out.glob("crops*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            listed = data.get("written", data.get("images", []))  # v2, v1
            entries.update({e["input"]: e for e in listed if isinstance(e, dict) and "input" in e})
        except (OSError, ValueError, AttributeError, TypeError, KeyError):
            continue
    return entries


def _encode_image(img: Any, fmt: str, quality: int = 90) -> bytes:
    """Encode in memory (the job layer writes the bytes atomically: see fastsal.files, encoders
    writing into files may drop a short write on a full disk)."""
    import io

    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=3)
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


_BOX_COLOURS = ((0, 229, 255), (118, 255, 3), (255, 64, 129), (255, 234, 0), (213, 0, 249), (255, 145, 0))


def draw_crops(image: Any, crops: Sequence[Crop]) -> Any:
    """Draw each crop's box and label (aspect, predicted share kept) on an RGB PIL image, in place.
    For ``--show``: a person can check the choice at a glance."""
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(image)
    W, H = image.size
    line = max(2, round(min(W, H) / 200))
    try:
        font: Any = ImageFont.load_default(size=max(12, round(min(W, H) / 30)))
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    for i, c in enumerate(crops):
        colour = _BOX_COLOURS[i % len(_BOX_COLOURS)]
        # boxes sharing an edge stay visible side by side; never so far in that a thin crop
        # (a 1-pixel-wide image's) turns inside out, which Pillow refuses
        inset = min(i * line, (c.w - 1) // 2, (c.h - 1) // 2)
        draw.rectangle((c.x + inset, c.y + inset, c.x + c.w - 1 - inset, c.y + c.h - 1 - inset),
                       outline=colour, width=line)
        draw.text((c.x + inset + 2 * line, c.y + inset + 2 * line), f"{c.aspect} {100 * c.score:.0f}%",
                  fill=colour, font=font, stroke_width=max(1, line // 2), stroke_fill=(0, 0, 0))
    return image


class CropTask(Task[Job]):
    """``fastsal crop`` as a job: every aspect's crop of each image, the boxes in the manifest."""

    kind, noun, manifest_name, records = "crops", "crops", "crops", "crops*.json"
    settings_keys = (*MAP_SETTINGS, *CROP_SETTINGS)
    input_errors = (ImageError,)

    def __init__(self, out: str | Path, aspects: Any, fmt: str = "jpg", *, show: bool = False, scale: float = 1.0,
                 min_scale: float | None = None, keep: float = 0.9, max_side: int | None = DEFAULT_MAX_SIDE,
                 quality: int = 90, **kw: Any) -> None:
        if fmt not in CROP_FORMATS:
            raise CropError(f"unknown crop format {fmt!r}; choose from: {', '.join(CROP_FORMATS)}")
        _check_scales(scale, min_scale, keep)
        super().__init__(out, **kw)
        self.aspects, self.fmt, self.show, self.quality = parse_aspects(aspects), fmt, show, quality
        self.options: dict[str, Any] = {"scale": scale, "min_scale": min_scale, "keep": keep, "max_side": max_side}
        if self.request is not None:  # the crop options are settings too: a rerun with others is not "done"
            self.request = {**self.request, **self.options}
        self._earlier: dict[str, dict[str, Any]] | None = None

    def outputs(self, job: Any) -> dict[str, Path]:
        return crop_paths(self.out, job.stem, self.aspects, self.fmt, self.show)

    def settings(self) -> dict[str, Any]:
        return {**self.model.settings(), **self.options}

    def header(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {"aspects": [a.label for a in self.aspects], "output_format": self.fmt, "show": self.show}

    def earlier(self, item: Item) -> dict[str, Any] | None:
        """Done when a report in ``out`` (any sharding) has its boxes for every aspect and the files exist."""
        if self._earlier is None:
            self._earlier = _earlier_entries(self.out)
        entry = self._earlier.get(item.key)
        if entry is None:
            return None
        by_aspect = {c.get("aspect"): c for c in entry.get("crops", []) if isinstance(c, dict)}
        labels, paths = [a.label for a in self.aspects], item.outputs
        if any(a not in by_aspect for a in labels) or not all(p.is_file() for p in paths.values()):
            return None
        crops = [{**by_aspect[a], **({"output": str(paths[a])} if a in paths else {})} for a in labels]
        kept = {k: v for k, v in entry.items() if k not in ("crops", "show", "earlier_run")}
        return {**kept, "crops": crops, **({"show": str(paths["show"])} if self.show else {})}

    def decode(self, item: Item) -> tuple[Any, tuple[int, int]]:
        small, size = self.model.read(item.source)
        return small, (int(size[0]), int(size[1]))

    def infer(self, decoded: list[Any]) -> list[Any]:
        return self.model.small_log_densities([self.model.preprocess(small, size) for small, size in decoded])

    def encode(self, item: Item, decoded: Any, log_small: Any) -> Result:
        from fastsal.images import load_image
        from fastsal.predict import postprocess
        from fastsal.viewing import blend, to_png

        size, paths = decoded[1], item.outputs
        crops = crop_boxes(np.exp(log_small), self.aspects, image_size=size, **self.options)
        entry = {**input_entry(item.source), "width": size[1], "height": size[0],
                 "crops": [{**c.to_dict(), **({"output": str(paths[c.aspect])} if c.aspect in paths else {})}
                           for c in crops]}
        files: dict[str, bytes] = {}
        if paths:
            try:
                full = load_image(image_source(item))
            except ImageError as exc:  # it decoded a moment ago: changed or removed since
                raise ImageError(f"{exc}; it changed while the run was going") from None
            if full.size != (size[1], size[0]):
                raise ImageError(f"{item.source}: changed size while the run was going; rerun")
            for c in crops:
                if c.aspect in paths:
                    files[str(paths[c.aspect])] = _encode_image(full.crop(c.pil_box), self.fmt, self.quality)
            if self.show:
                values = to_png(postprocess(log_small, size))
                files[str(paths["show"])] = _encode_image(draw_crops(blend(full, values), crops), "jpg", self.quality)
                entry["show"] = str(paths["show"])
        return Result(item.key, entry, files)


def run(predictor: Any, jobs: Sequence[Any], out: str | Path, aspects: Any, fmt: str = "jpg", *, show: bool = False,
        report: str | Path | None = None, scale: float = 1.0, min_scale: float | None = None, keep: float = 0.9,
        max_side: int | None = DEFAULT_MAX_SIDE, quality: int = 90, loader: Any = None,
        request: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Crop every job's image (:class:`fastsal.jobs.Job`: source and output stem) for each aspect.

    Writes ``<stem>_<W>x<H>.<fmt>`` per aspect (none for ``fmt="json"``), ``<stem>_crops.jpg`` with
    ``show`` (the overlay with the boxes drawn), and the report ``report`` (the job manifest: every
    input with its boxes and scores under ``written``, every failure). Resumable: an input whose
    boxes are in a report in ``out`` from an earlier run with the same settings (any sharding),
    and whose files exist, is kept, not redone (``overwrite`` redoes it). ``options`` are
    :func:`fastsal.jobs.run`'s (``overwrite``, ``strict``, ``on_skip``, ``batch_size``, ...).
    """
    from fastsal.jobs import run as run_task

    task = CropTask(out, aspects, fmt, show=show, scale=scale, min_scale=min_scale, keep=keep, max_side=max_side,
                    quality=quality, model=predictor, loader=loader, request=request)
    return run_task(task, jobs, manifest=report, **options)
