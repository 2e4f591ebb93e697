"""``fastsal cache``."""
from __future__ import annotations

import argparse
import sys

from fastsal import defaults


def _cmd_cache(args: argparse.Namespace) -> int:
    from fastsal.runtime import cache

    folder = cache.cache_dir()
    if args.action == "list":
        for line in cache.describe(folder):
            print(line)
        try:
            cache.check_private(folder)
        except cache.CacheError as exc:
            print(f"fastsal: warning: {exc}", file=sys.stderr)
        return 0
    count, freed = cache.clear(folder)
    left = len(cache.entries(folder))
    busy = f"; {left} in use by a running fastsal were kept" if left else ""
    print(f"removed {count} entries ({freed / 2**20:.1f} MB) from {folder}{busy}")
    return 0


def add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="list or clear the converted and compiled models fastsal keeps",
                       description="The model cache: graphs converted from the weights (one per weights, fastsal "
                                   "version and precision) and OpenVINO's compiled models (one per input shape and "
                                   "batch size), in $FASTSAL_CACHE_DIR, else $XDG_CACHE_HOME/fastsal, else "
                                   f"~/.cache/fastsal; at most {defaults.CACHE_MAX_MB} MB ($FASTSAL_CACHE_MAX_MB), "
                                   "least recently used out. Only you may write the folder: one other users can "
                                   "write is refused.")
    p.add_argument("action", choices=("list", "clear"),
                   help="list: entries, most recently used first, and the total; clear: remove them all")
    p.set_defaults(func=_cmd_cache, engines=False)
