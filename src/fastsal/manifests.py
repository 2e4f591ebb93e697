"""Job manifests: reading every format fastsal has written, and merging the shards of one job.

    merged = merge_manifests(["maps/manifest-0-of-2.json", "maps/manifest-1-of-2.json"])
    write_json(merged, "maps/manifest-merged.json")      # what `fastsal manifest merge` does

Why: a job split over a SLURM array, a Kubernetes Indexed Job or hosts leaves one manifest per
shard; a user wants one report (how many written, which failed, is anything missing) and must
not combine shards made with other settings by mistake. :func:`read_manifest` turns the older
per-command formats (maps, videos, crops, pseudo-labels before :data:`fastsal.jobs.MANIFEST_FORMAT`)
into the one schema, so merging and tools need to know only that one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from fastsal.jobs import MANIFEST_FORMAT, OLD_FORMATS, JobError, now

#: The manifests a folder argument stands for: one per shard (``manifest-0-of-4.json``,
#: ``crops-1-of-2.json``, ``manifest-videos-0-of-2.json``).
SHARD_GLOB = "*-of-*.json"


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest of any fastsal format, as the one schema (``format`` :data:`MANIFEST_FORMAT`, ``task``,
    ``written`` and ``failed`` lists); :class:`JobError` naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise JobError(f"{path}: cannot read the manifest ({exc.__class__.__name__}); pass a manifest a fastsal "
                       f"command wrote") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt == MANIFEST_FORMAT:
        out = dict(data)
    elif fmt in OLD_FORMATS:
        out = {**data, "format": MANIFEST_FORMAT, "task": OLD_FORMATS[fmt], "converted_from": fmt}
        if fmt == "fastsal-crops/1":
            out["written"] = data.get("images")
        elif fmt == "fastsal-pseudo-labels/1":
            entries = [e for e in data.get("images") or [] if isinstance(e, dict)]
            out["written"] = [e for e in entries if e.get("status") == "ok"]
            out["failed"] = [e for e in entries if e.get("status") != "ok"]
            out["settings"] = {"teacher_sha256": (data.get("teacher") or {}).get("sha256")}
        out.pop("images", None)
    else:
        raise JobError(f"{path}: not a fastsal manifest (format {fmt!r}); pass a manifest a fastsal command wrote")
    if not isinstance(out.get("written"), list) or not isinstance(out.get("failed"), list):
        raise JobError(f"{path}: damaged manifest (no written/failed lists); rerun its shard to rewrite it")
    return out


def shard_manifests(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a folder stands for its shards' manifests (:data:`SHARD_GLOB`), sorted."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            inside = sorted(p.glob(SHARD_GLOB))
            if not inside:
                raise JobError(f"{p}: no shard manifests ({SHARD_GLOB}) in this folder; pass the manifest files")
            found += inside
        elif p.is_file():
            found.append(p)
        else:
            raise JobError(f"{p}: no such manifest or folder")
    return found


def merge_manifests(paths: Sequence[str | Path]) -> dict[str, Any]:
    """One report of a job's shards: counts summed, entries joined, missing shards named.

    The shards must be of one task, one shard count and the same settings: otherwise their
    outputs are not one job's, and a one-line :class:`JobError` says which file differs.
    """
    files = shard_manifests(paths)
    if not files:
        raise JobError("no manifests to merge; pass shard manifests or their folder")
    shards = [(f, read_manifest(f)) for f in files]
    first_file, first = shards[0]
    counts: set[int] = set()
    seen: dict[int, Path] = {}
    for f, m in shards:
        for key in ("task", "settings"):
            if json.dumps(m.get(key), sort_keys=True) != json.dumps(first.get(key), sort_keys=True):
                raise JobError(f"{f}: its {key} differ from {first_file.name}'s; merge only the shards of one job")
        shard = m.get("shard") or [0, 1]
        index, count = int(shard[0]), int(shard[1])
        counts.add(count)
        if len(counts) > 1:
            raise JobError(f"{f}: shard {index}/{count} is of another split than {first_file.name}'s "
                           f"{first.get('shard')}; merge only the shards of one job")
        if index in seen:
            raise JobError(f"{f}: shard {index}/{count} is given twice (also {seen[index].name}); pass each once")
        seen[index] = f
    count = counts.pop()
    missing = [i for i in range(count) if i not in seen]
    written = [e for _, m in shards for e in m["written"]]
    failed = [e for _, m in shards for e in m["failed"]]
    return {
        "format": MANIFEST_FORMAT, "task": first.get("task"), "merged_from": [str(f) for f in files],
        "shard": [0, 1], "shards": [[i, count] for i in sorted(seen)], "missing_shards": missing,
        "settings": first.get("settings"),
        "assigned": sum(int(m.get("assigned") or 0) for _, m in shards),
        "skipped_existing": sum(int(m.get("skipped_existing") or 0) for _, m in shards),
        "written_now": sum(1 for e in written if not e.get("earlier_run")),
        "written": written, "failed": failed,
        "complete": not missing and all(m.get("complete") is True for _, m in shards),
        "incomplete_shards": [str(f) for f, m in shards if m.get("complete") is not True],
        "seconds": round(sum(float(m.get("seconds") or 0) for _, m in shards), 3),
        "merged": now(),
    }


__all__ = ["SHARD_GLOB", "merge_manifests", "read_manifest", "shard_manifests"]
