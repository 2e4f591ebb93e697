"""Package a trained checkpoint as shipped weights: fp16 file, JSON spec and Markdown model card.

Step 1, the weights (test scores still empty)::

    python scripts/ship_weights.py ship runs/a/best.pt --blur 2 --command "fastsal train ..." \
        --recipe "..." --datasets osie,mit1003,imagenet [--encoder-from fastsal_a_effnet_lite0] \
        [--name fastsal_a_effnet_lite0_fast]

Step 2, the scores, from ``fastsal evaluate --model NAME --split test --json R`` on each dataset::

    python scripts/ship_weights.py score NAME --eval osie=osie.json --eval mit1003=mit.json

The JSON spec (``fastsal/weights/NAME.json``) is what :class:`fastsal.models.registry.Weights` reads;
the card (``NAME.md``) is for people. fp16 halves the file (the README records the score change it
causes). The blur (post-processing, selected on the val split) is stored so ``fastsal.load()``
applies it. ``--encoder-from`` ships a decoder trained on a frozen shipped encoder without the
encoder (the file holds its hash). ``--datasets`` names every dataset the weights learned from,
the encoder's ImageNet initialisation included; the card states each one's terms
(:mod:`fastsal.licences`). ``--name`` ships a second set of weights of one architecture under a
name of its own (the file, the card and :data:`fastsal.models.registry.WEIGHTS`'s key).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastsal import files
from fastsal.cost import count_macs, count_params
from fastsal.licences import terms_line
from fastsal.models import load_model, save_checkpoint
from fastsal.models.registry import WEIGHTS_CARD_FORMAT, WEIGHTS_DIR

METRICS = ("nss", "cc", "kld", "information_gain", "auc_judd", "auc_shuffled", "sim")
LABELS = {"nss": "NSS", "cc": "CC", "kld": "KLD", "information_gain": "IG (bits)", "auc_judd": "AUC-Judd",
          "auc_shuffled": "sAUC", "sim": "SIM"}


def ship(args: argparse.Namespace) -> None:
    model, meta = load_model(args.checkpoint)
    name = args.name or model.name
    config = meta.get("config") or meta.get("training_config") or {}
    size = tuple(args.input_size or config.get("input_size", (192, 256)))
    aspect = bool(config.get("aspect", False))
    data = " + ".join(_data_entry(d) for d in config.get("data", ["osie"]))
    meta = {k: v for k, v in meta.items() if k not in ("config", "training_config")} | {"training_config": config, "blur_sigma": args.blur}
    out = WEIGHTS_DIR / f"{name}.pt"
    save_checkpoint(model, model.name, out, meta=meta, half=not args.fp32, encoder_from=args.encoder_from)
    spec = {
        "format": WEIGHTS_CARD_FORMAT, "model": model.name, "name": name, "file": out.name, "input_size": list(size), "aspect": aspect,
        "blur_sigma": args.blur, "data": f"{data} (selected on val: best epoch {meta.get('epoch')})",
        "datasets": args.datasets,
        "trained_at": list(config.get("input_size", size)),
        "recipe": args.recipe, "command": args.command,
        "gmacs": round(count_macs(model.eval(), size) / 1e9, 3), "params": count_params(model),
        "metrics": {}, "card": f"{name}.md", "encoder_from": args.encoder_from,
        "val": {k: round(v, 4) for k, v in meta.items() if k.startswith("val_") and isinstance(v, float)},
    }
    if meta.get("calibration") is not None:  # from `fastsal calibrate`: the card says what was fitted, on what
        from fastsal.calibration import from_meta

        spec["calibration"] = from_meta(meta).describe()
    files.write_json(spec, WEIGHTS_DIR / f"{name}.json")
    write_card(spec, {})
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and its card")


def _data_entry(entry: str) -> str:
    """A training data entry for people: ``osie`` -> "osie train", ``pseudo=labels/scene`` -> "pseudo-labels labels/scene"."""
    name, _, folder = entry.partition("=")
    return f"pseudo-labels labels/{Path(folder).name}" if name == "pseudo" and folder else f"{name} train"


def score(args: argparse.Namespace) -> None:
    path = WEIGHTS_DIR / f"{args.name}.json"
    spec = json.loads(path.read_text())
    gold = {}
    for item in args.gold or []:  # the baselines do not depend on the model: one report with them serves all
        dataset, _, report_path = item.partition("=")
        gold[dataset] = json.loads(Path(report_path).read_text())["results"]
    reports = {}
    for item in args.eval:
        dataset, _, report_path = item.partition("=")
        report = json.loads(Path(report_path).read_text())
        results = report["results"]
        for row in ("centre bias", "gold standard"):
            if row not in results and row in gold.get(dataset, {}):
                results[row] = gold[dataset][row]
        mine = next(k for k in results if k not in ("centre bias", "uniform", "gold standard"))
        spec["metrics"][f"{dataset}_test"] = {m: round(results[mine][m]["mean"], 4) for m in METRICS if m in results[mine]}
        reports[dataset] = (report, mine)
    files.write_json(spec, path)
    write_card(spec, reports, kept=card_sections(WEIGHTS_DIR / spec["card"]))
    print(f"updated {path} and its card")


def card_sections(card: Path) -> dict[str, str]:
    """The per-dataset test sections of an existing card (``### D test ...`` up to the next one),
    so that scoring one more dataset keeps the others' tables instead of dropping them."""
    if not card.is_file():
        return {}
    sections: dict[str, str] = {}
    current = None
    for line in card.read_text().splitlines():
        if line.startswith("### ") and line.split()[2:3] == ["test"]:
            current = line.split()[1]
            sections[current] = ""
        if current is not None:
            sections[current] += line + "\n"
    return sections


def write_card(spec: dict, reports: dict, kept: dict[str, str] | None = None) -> None:
    """Write the Markdown card: facts from ``spec``, a test table per report; ``kept``: earlier
    cards' sections of datasets not in ``reports`` (in the order osie, mit1003, scene, others)."""
    h, w = spec["input_size"]
    lines = [
        f"# Model card: `{spec.get('name') or spec['model']}`"
        + (f" (architecture `{spec['model']}`)" if spec.get("name", spec["model"]) != spec["model"] else ""), "",
        f"- **Weights**: `{spec['file']}` (fp16)" + (f"; the encoder is `{spec['encoder_from']}`'s, frozen "
                                                   "(not stored twice)" if spec.get("encoder_from") else ""),
        f"- **Input**: {h}x{w} pixels" + (", each image keeping its aspect (sides multiples of 32)" if spec["aspect"]
                                          else ", squashed") + f"; post-processing blur {spec['blur_sigma']:g} px"
        + (f" (trained at {spec['trained_at'][0]}x{spec['trained_at'][1]}; the inference size was chosen on val)"
           if spec.get("trained_at") and list(spec["trained_at"]) != list(spec["input_size"]) else ""),
        *([f"- **Calibration**: {spec['calibration']} (`fastsal calibrate`; never fitted on test)"]
          if spec.get("calibration") else []),
        f"- **Cost**: {spec['gmacs']:.2f} GMACs at {h}x{w}, {spec['params']:,} parameters",
        f"- **Data**: {spec['data']}. Never trained or tuned on a test split.",
        f"- **Recipe**: {spec['recipe']}",
        f"- **Command**: `{spec['command']}`",
        "- **Intended use**: free-viewing fixation density of natural photos (3 s viewing, 15 observers). "
        "Not validated on faces in video, text-heavy layouts, or tasks other than free viewing.",
        terms_line(spec["datasets"]), "",
    ]
    kept = {d: text for d, text in (kept or {}).items() if d not in reports}
    order = ["osie", "mit1003", "scene"]
    datasets = sorted({*reports, *kept}, key=lambda d: (order.index(d) if d in order else len(order), d))
    if datasets:
        lines += ["## Test scores (`fastsal evaluate`, mean ± s.e.)", ""]
    for dataset in datasets:
        if dataset in kept:
            lines += kept[dataset].rstrip("\n").splitlines() + [""]
            continue
        report, mine = reports[dataset]
        res = report["results"]
        cols = [m for m in METRICS if m in res[mine]]
        lines += [f"### {dataset} test ({report['config']['n_images']} images)", "",
                  "| | " + " | ".join(LABELS[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for row in (mine, "centre bias", "gold standard"):
            if row in res:
                cells = [f"{res[row][c]['mean']:.3f} ± {res[row][c]['sem']:.3f}" if c in res[row] else "-" for c in cols]
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
        if dataset == "scene":
            lines += ["", "Scene publishes no viewing geometry: one degree is assumed to be 3 % of each image's "
                          "long side (`fastsal.data.datasets.SCENE_DEGREE_SHARE`)."]
        lines += ["", f"Command: `fastsal evaluate --model {spec.get('name') or spec['model']} --dataset {dataset} "
                      f"--root ../shared/data/{dataset} --split test`", ""]
    files.atomic_write_bytes(WEIGHTS_DIR / spec["card"], ("\n".join(lines) + "\n").encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("ship")
    p.add_argument("checkpoint")
    p.add_argument("--blur", type=float, required=True, help="post-processing blur chosen on val")
    p.add_argument("--command", required=True, help="the training command(s)")
    p.add_argument("--recipe", required=True, help="init, optimiser, schedule, augmentation, epochs, wall time")
    p.add_argument("--encoder-from", default=None, help="shipped model whose frozen encoder this one uses")
    p.add_argument("--input-size", type=lambda t: tuple(int(v) for v in t.lower().split("x")), default=None,
                   metavar="HxW", help="the inference size chosen on val (default: the training size)")
    p.add_argument("--fp32", action="store_true", help="keep fp32 (default: fp16)")
    p.add_argument("--name", default=None, help="the weights' own name when the architecture already ships weights")
    p.add_argument("--datasets", type=lambda t: [d.strip() for d in t.split(",") if d.strip()], required=True,
                   metavar="A,B", help="every dataset the weights learned from, ImageNet init included "
                                       "(names in fastsal.licences.DATASET_TERMS), e.g. osie,mit1003,imagenet")
    p.set_defaults(func=ship)
    p = sub.add_parser("score")
    p.add_argument("name")
    p.add_argument("--eval", action="append", required=True, metavar="DATASET=REPORT.json")
    p.add_argument("--gold", action="append", metavar="DATASET=REPORT.json",
                   help="a report of the same split holding the gold standard (when --eval's ran with --no-gold)")
    p.set_defaults(func=score)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
