"""Make docs/example.png for the README: input | saliency map | overlay, for the bundled example.

    python scripts/make_readme_figure.py [--out docs/example.png] [--panel-width 400] [--weights FILE]

Uses the library's own ``predict``, ``to_png`` and ``overlay`` (what ``fastsal predict`` writes),
so the figure shows exactly what users get. Rerun whenever the shipped weights change.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import fastsal
from fastsal.files import atomic_path
from fastsal.images import load_rgb
from fastsal.predict import example_image

ROOT = Path(__file__).resolve().parents[1]
GAP = 8
LABEL_H = 28


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def make_figure(weights: str | None, panel_width: int) -> tuple[Image.Image, dict]:
    predictor = fastsal.load(weights or "default")
    rgb = load_rgb(example_image())
    density = predictor.predict(rgb)
    panels = [
        ("input", Image.fromarray(rgb)),
        ("saliency map", Image.fromarray(fastsal.to_png(density)).convert("RGB")),
        ("overlay", Image.fromarray(fastsal.overlay(rgb, density))),
    ]
    h, w = rgb.shape[:2]
    ph = round(panel_width * h / w)
    fig = Image.new("RGB", (3 * panel_width + 2 * GAP, ph + LABEL_H), "white")
    draw = ImageDraw.Draw(fig)
    font = _font(18)
    for i, (label, img) in enumerate(panels):
        x = i * (panel_width + GAP)
        fig.paste(img.resize((panel_width, ph), Image.LANCZOS), (x, LABEL_H))
        draw.text((x + panel_width / 2, LABEL_H / 2), label, fill=(30, 30, 30), font=font, anchor="mm")
    info = {"model": predictor.name, "weights": str(predictor.weights_path),
            "placeholder": bool(predictor.meta.get("placeholder")), "peak": np.unravel_index(density.argmax(), density.shape)}
    return fig, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "example.png")
    ap.add_argument("--panel-width", type=int, default=400)
    ap.add_argument("--weights", default=None, help="checkpoint file (default: the shipped model)")
    args = ap.parse_args(argv)

    fig, info = make_figure(args.weights, args.panel_width)
    with atomic_path(args.out) as tmp:
        fig.save(tmp, format="PNG", optimize=True)
    print(f"wrote {args.out} ({fig.width}x{fig.height}) with {info['model']} from {info['weights']}")
    if info["placeholder"]:
        print("warning: these are PLACEHOLDER weights (random decoder): rerun once the trained weights ship",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
