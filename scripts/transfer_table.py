"""Tables of the knowledge-transfer experiment (docs/results.md) from `fastsal evaluate --json` reports.

    python scripts/transfer_table.py --base a --real c --gmacs a=0.64 \\
        --row a=runs/eval/a_mit1003.json --row b=runs/eval/b_mit1003.json --row c=runs/eval/c_mit1003.json

Prints one Markdown table for one test split: each row's metrics (mean ± standard error), then its
gain over the ``--base`` row with the *paired* standard error (the rows score the same images, so
the spread of per-image differences, not of the scores, says whether a gain is real), and the share
of the ``--real`` row's gain it recovers: (x - base) / (real - base), "n/a" where the real labels'
own gain is under two paired standard errors. Rows named by the centre bias
and the gold standard come from the first report.
"""
from __future__ import annotations

import argparse
import json
import math

METRICS = [("nss", "NSS"), ("cc", "CC"), ("kld", "KLD ↓"), ("information_gain", "IG (bits)"), ("auc_judd", "AUC-Judd"),
           ("auc_shuffled", "sAUC")]
BASELINES = ("centre bias", "gold standard")


def per_image(report: dict, metric: str) -> dict[str, float]:
    """{image: score} of the model in a report (its only non-baseline entry)."""
    mine = next(k for k in report["per_image"] if k not in (*BASELINES, "uniform"))
    return {name: scores[metric] for name, scores in report["per_image"][mine].items()}


def paired(x: dict[str, float], base: dict[str, float]) -> tuple[float, float]:
    """Mean and standard error of the per-image differences x - base over their common images."""
    d = [x[k] - base[k] for k in x if k in base]
    mean = sum(d) / len(d)
    var = sum((v - mean) ** 2 for v in d) / max(len(d) - 1, 1)
    return mean, math.sqrt(var / len(d))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--row", action="append", required=True, metavar="LABEL=JSON")
    ap.add_argument("--base", help="label of the row gains are measured from, e.g. (a) ground truth only")
    ap.add_argument("--real", help="label of the row with real labels, whose gain others recover a share of")
    ap.add_argument("--gmacs", action="append", default=[], metavar="LABEL=G")
    ap.add_argument("--gains", nargs="+", default=["nss", "information_gain"], help="metrics of the gain columns")
    args = ap.parse_args()
    gmacs = {k: v for k, v in (g.split("=", 1) for g in args.gmacs)}
    reports = {}
    for item in args.row:
        label, path = item.split("=", 1)
        with open(path, encoding="utf-8") as fh:
            reports[label] = json.load(fh)
    for option, label in (("--base", args.base), ("--real", args.real)):
        if label is not None and label not in reports:
            ap.error(f"{option} {label!r} is not a --row label ({', '.join(reports)})")
    first = next(iter(reports.values()))["results"]
    names = dict(METRICS)
    head = ["model", "GMACs"] + [m[1] for m in METRICS]
    if args.base:
        head += [f"Δ{names[g].split(' ')[0]} vs {args.base}" for g in args.gains]
    if args.base and args.real:
        head += [f"{names[g].split(' ')[0]} gain recovered" for g in args.gains]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, report in reports.items():
        res = report["results"]
        mine = next(k for k in res if k not in (*BASELINES, "uniform"))
        cells = [label, gmacs.get(label, "")]
        cells += [f"{res[mine][m]['mean']:.3f} ± {res[mine][m]['sem']:.3f}" for m, _ in METRICS]
        if args.base:
            for g in args.gains:
                if label == args.base:
                    cells.append("")
                    continue
                mean, se = paired(per_image(report, g), per_image(reports[args.base], g))
                cells.append(f"{mean:+.3f} ± {se:.3f}")
        if args.base and args.real:
            for g in args.gains:
                if label in (args.base, args.real):
                    cells.append("")
                    continue
                gain = paired(per_image(report, g), per_image(reports[args.base], g))[0]
                real, real_se = paired(per_image(reports[args.real], g), per_image(reports[args.base], g))
                # a share of a gain that is not there (under two paired standard errors) means nothing
                cells.append(f"{100 * gain / real:.0f} %" if real > 2 * real_se else "n/a")
        print("| " + " | ".join(cells) + " |")
    for name in BASELINES:
        if name in first:
            cells = [name, ""] + [f"{first[name][m]['mean']:.3f} ± {first[name][m]['sem']:.3f}" for m, _ in METRICS]
            cells += [""] * (len(head) - len(cells))
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
