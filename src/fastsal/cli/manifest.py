"""``fastsal manifest``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastsal.cli.render import UsageError


def _cmd_manifest(args: argparse.Namespace) -> int:
    from fastsal.files import write_json
    from fastsal.manifests import merge_manifests

    merged = merge_manifests(args.manifests)
    out = Path(args.out)
    target = out / "manifest-merged.json" if out.is_dir() else out
    try:
        write_json(merged, target)
    except OSError as exc:
        raise UsageError(f"-o {target}: cannot write ({exc.strerror or exc}); pass a writable file") from None
    if not args.quiet:
        shards = len(merged["shards"])
        missing = f"; missing shards {merged['missing_shards']}" if merged["missing_shards"] else ""
        state = "complete" if merged["complete"] else "INCOMPLETE"
        print(f"{shards} shard{'s' if shards != 1 else ''} of {merged['task']} merged into {target}: "
              f"{len(merged['written'])} written ({merged['written_now']} by these runs), {len(merged['failed'])} "
              f"failed, {state}{missing}", file=sys.stderr)
    return 0


def add_manifest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manifest", help="combine the manifests of a job's shards into one report",
                       description="merge: one report of a job run in shards (--shard I/N, SLURM arrays, Kubernetes "
                                   "Indexed Jobs): counts, every written input and failure, the shards missing. The "
                                   "shards must share their task, shard count and settings. Reads every manifest "
                                   "format fastsal has written; writes the merged one atomically.")
    p.add_argument("action", choices=("merge",), help="merge: combine shard manifests")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST",
                   help="shard manifests, or folders (their *-of-*.json files)")
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="the merged manifest (a folder: FOLDER/manifest-merged.json)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=_cmd_manifest, engines=False)
