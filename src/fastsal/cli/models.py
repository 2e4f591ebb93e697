"""``fastsal models`` and ``fastsal cost``."""
from __future__ import annotations

import argparse

from fastsal import defaults
from fastsal.cli.types import hxw, positive_int, threads

TEST_SETS = (("osie_test", "OSIE"), ("mit1003_test", "MIT1003"), ("scene_test", "Scene"))


def _cmd_models(args: argparse.Namespace) -> int:
    from fastsal.models.registry import ALIASES, catalogue

    roles: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        roles.setdefault(target, []).append(alias)
    if args.json:  # for scripts: every shipped fact, not the table's rounding
        import json

        print(json.dumps([_model_entry(name, spec, roles.get(name, [])) for name, spec in catalogue()], indent=1))
        return 0
    head = [f"{label} {k}" for _, label in TEST_SETS for k in ("NSS", "IG")]
    rows = [("model", "weights", "input", "GMACs", "params", *head)]
    for name, spec in catalogue():
        label = name + "".join(f" ({r})" for r in roles.get(name, []))
        if spec is None:  # builds and trains, e.g. fastsal_*_effnet_lite2 (a teacher backbone)
            rows.append((label, "none (train only)", *["-"] * (3 + len(head))))
            continue
        m = spec.metrics
        cell = lambda ds, k, m=m: f"{m[ds][k]:.2f}" if k in m.get(ds, {}) else "-"  # noqa: E731
        size = f"{spec.input_size[0]}x{spec.input_size[1]}" + (" aspect" if spec.aspect else "")
        rows.append((label, spec.file, size, f"{spec.gmacs:.2f}", f"{spec.params / 1e6:.2f}M",
                     *[cell(ds, k) for ds, _ in TEST_SETS for k in ("nss", "information_gain")]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("Scores: `fastsal evaluate` on each dataset's test split (IG in bits over the centre bias; Scene with a "
          "one-degree sigma of 3 % of the long side, assumed); cards in fastsal/weights/*.md")
    if any(spec is None for _, spec in catalogue()):
        print("train only: no weights ship; `fastsal train --model NAME --backbone-weights imagenet`")
    return 0


def _model_entry(name: str, spec, roles: list[str]) -> dict:
    """One model for ``fastsal models --json``: its shipped weights' facts, or ``weights: null``."""
    entry: dict = {"model": name, "default": "default" in roles, "aliases": roles,
                   "architecture": spec.model if spec is not None else name, "weights": None}
    if spec is not None:
        entry.update(weights=spec.file, input_size=list(spec.input_size), aspect=spec.aspect,
                     blur_sigma=spec.blur_sigma, gmacs=spec.gmacs, params=spec.params, data=spec.data,
                     metrics=spec.metrics, card=spec.card, calibration=spec.calibration)
    return entry


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models, their shipped weights and test scores",
                       description="List every model name: the shipped weights file, input size (a pixel budget "
                                   "when the aspect is kept), cost (GMACs, parameters) and test scores of each. "
                                   "Models without weights can be trained (`fastsal train --model NAME`).")
    p.add_argument("--json", action="store_true", help="print the list as JSON (for scripts) instead of a table")
    p.set_defaults(func=_cmd_models)



def _cmd_cost(args: argparse.Namespace) -> int:
    from fastsal.cost import cost_table, format_table
    from fastsal.files import write_json

    rows = cost_table(args.models, args.input_size, backends=args.backends,
                      measure_latency=not args.no_latency, threads=args.threads, runs=args.runs)
    print(format_table(rows))
    if args.json:
        print(f"wrote {write_json(rows, args.json)}")
    return 0


def add_cost(sub: argparse._SubParsersAction) -> None:
    labels = ["eager", *(e if q == "fp32" else f"{e}-{q}" for e, qs in defaults.ENGINE_PRECISIONS.items() for q in qs)]
    p = sub.add_parser("cost", help="parameters, GMACs, file sizes and CPU latency of models",
                       description="Count each model's parameters and multiply-accumulates at --input-size, its "
                                   "file size, and (unless --no-latency) time one image on this CPU with each "
                                   "--backends runner (median of --runs). SalGAN and DeepGaze II are built with "
                                   "random weights, for counting only.")
    p.add_argument("models", nargs="*", default=["fastsal_a", "fastsal_c", "salgan", "deepgaze2"],
                   help="FastSal names (see `fastsal models`) or salgan / deepgaze2 (random weights, for counting)")
    p.add_argument("--input-size", type=hxw, default=defaults.INPUT_SIZE, metavar="HxW",
                   help=f"network input size (default: {defaults.INPUT_SIZE[0]}x{defaults.INPUT_SIZE[1]})")
    p.add_argument("--backends", nargs="+", choices=labels, default=["eager"], metavar="RUNNER",
                   help=f"runners to time: {', '.join(labels)} (default: eager = PyTorch, the model as defined)")
    p.add_argument("--no-latency", action="store_true", help="count only (no timing)")
    p.add_argument("--runs", type=positive_int, default=5, metavar="N",
                   help="timed runs per runner (default: %(default)s)")
    p.add_argument("--threads", type=threads(), default=None, metavar="N",
                   help="CPU threads (default: the engine's choice)")
    p.add_argument("--json", metavar="FILE", help="also write the rows to FILE as JSON")
    p.set_defaults(func=_cmd_cost)
