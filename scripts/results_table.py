"""Markdown tables for docs/results.md from `fastsal evaluate --json` reports.

    python scripts/results_table.py --report "fastsal_a=runs/eval/fastsal_a_osie.json" ... --gmacs fastsal_a=0.64

Each report contributes its model's row; the centre bias and the gold standard rows come from the
first report (they do not depend on the model). IG % = the model's information gain as a share of
the gold standard's; NSS/GMAC divides NSS by the network's cost.
"""
from __future__ import annotations

import argparse
import json

METRICS = [("auc_judd", "AUC-Judd"), ("auc_shuffled", "sAUC"), ("nss", "NSS"), ("cc", "CC"), ("kld", "KLD ↓"),
           ("information_gain", "IG (bits)")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="append", required=True, metavar="LABEL=JSON")
    ap.add_argument("--gmacs", action="append", default=[], metavar="LABEL=G")
    args = ap.parse_args()
    gmacs = {k: float(v) for k, v in (g.split("=", 1) for g in args.gmacs)}
    rows, baselines = [], None
    for item in args.report:
        label, path = item.split("=", 1)
        report = json.loads(open(path).read())
        res = report["results"]
        mine = next(k for k in res if k not in ("centre bias", "uniform", "gold standard"))
        rows.append((label, res[mine]))
        if baselines is None or ("gold standard" in res and "gold standard" not in baselines):
            baselines = {k: v for k, v in res.items() if k in ("centre bias", "gold standard")}
    gold_ig = baselines.get("gold standard", {}).get("information_gain", {}).get("mean")
    head = ["model", "GMACs"] + [m[1] for m in METRICS] + ["IG % of gold", "NSS / GMAC"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, r in rows + [(k, v) for k, v in (baselines or {}).items()]:
        g = gmacs.get(label)
        cells = [f"{r[m]['mean']:.3f} ± {r[m]['sem']:.3f}" if m in r else "-" for m, _ in METRICS]
        ig = r.get("information_gain", {}).get("mean")
        share = f"{100 * ig / gold_ig:.0f} %" if ig is not None and gold_ig else "-"
        per = f"{r['nss']['mean'] / g:.2f}" if g else "-"
        print(f"| {label} | {g if g is not None else '-'} | " + " | ".join(cells) + f" | {share} | {per} |")


if __name__ == "__main__":
    main()
