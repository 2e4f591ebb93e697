"""Package a trained checkpoint as the shipped default: fp16, with its model card in the metadata.

    python scripts/ship_weights.py runs/a_lite0/best.pt --blur 1.5 --card card.json

fp16 halves the file; the README records the NSS change it causes (must stay < 0.5 %). The blur
(post-processing, selected on the val split) is stored so `fastsal.load()` applies it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastsal.models import load_model, save_checkpoint
from fastsal.models.registry import SHIPPED, WEIGHTS_DIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--blur", type=float, required=True, help="post-processing blur chosen on val")
    parser.add_argument("--card", help="JSON with extra model-card fields (data, command, figures)")
    parser.add_argument("--fp32", action="store_true", help="keep fp32 (default: fp16)")
    args = parser.parse_args()
    model, meta = load_model(args.checkpoint)
    name = model.name
    meta = {k: v for k, v in meta.items() if k != "config"} | {"training_config": meta.get("config"),
                                                               "blur_sigma": args.blur}
    if args.card:
        meta["card"] = json.loads(Path(args.card).read_text())
    out = WEIGHTS_DIR / SHIPPED[name]
    save_checkpoint(model, name, out, meta=meta, half=not args.fp32)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
