"""Your own data: a folder of images with fixations as a CSV of points or as binary maps
(``--dataset folder``)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from fastsal.data.base import DatasetError, Sample, check_split, image_size, inside, keep_fixated, read_split, warn
from fastsal.data.fixations import points_from_map
from fastsal.errors import first_line

FOLDER_LAYOUT = ("images/** plus fixations.csv (header image,x,y[,observer]) or maps/**.png (binary fixation maps), "
                 "optional splits.json and dataset.json")
_FOLDER_CONFIG_KEYS = ("pixels_per_degree", "coordinates")
_SPLITS_EXAMPLE = '{"train": ["a.jpg", ...], "val": [...], "test": [...]}'


def _folder_config(root: Path) -> tuple[float | None, float]:
    """(pixels per degree or None, the offset that makes CSV coordinates 0-based) from ``dataset.json``."""
    path = root / "dataset.json"
    if not path.is_file():
        return None, 0.0
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DatasetError(f"{path}: not valid JSON{where}; write e.g. {{\"pixels_per_degree\": 35}}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object such as {{\"pixels_per_degree\": 35}}")
    unknown = [k for k in data if k not in _FOLDER_CONFIG_KEYS]
    if unknown:
        raise DatasetError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(_FOLDER_CONFIG_KEYS)}")
    ppd = data.get("pixels_per_degree")
    if ppd is not None and (isinstance(ppd, bool) or not isinstance(ppd, (int, float))
                            or not math.isfinite(ppd) or ppd <= 0):
        raise DatasetError(f"{path}: pixels_per_degree must be a positive number; got {ppd!r}")
    coordinates = data.get("coordinates", "0-based")
    if coordinates not in ("0-based", "1-based"):
        raise DatasetError(f"{path}: coordinates must be \"0-based\" or \"1-based\"; got {coordinates!r}")
    return (float(ppd) if ppd is not None else None), (1.0 if coordinates == "1-based" else 0.0)


def _folder_images(images_dir: Path) -> dict[str, Path]:
    from fastsal.images import IMAGE_SUFFIXES, walk_images

    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: no such folder; pass {{option}} pointing at a folder holding {FOLDER_LAYOUT}",
                           option="root")
    found = {}
    for f in sorted(walk_images(images_dir, hidden_folders=False, unreadable=False)):
        if f.is_file():
            found[f.relative_to(images_dir).as_posix()] = f
    if not found:
        raise DatasetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)}); put the stimuli there")
    return found


def _csv_number(text: str, column: str, path: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path} line {line}: {column} {text.strip()!r} is not a number; fix the row") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path} line {line}: {column} is {text.strip()!r}, not a finite number; fix the row")
    return value


def _read_fixations_csv(path: Path, images: dict[str, Path], offset: float) -> dict[str, dict[str, list]]:
    """image name -> observer label -> [(x, y), ...] (0-based), in file order.

    Every malformed row is an error with its line number; so is a name that is no image under
    ``images/`` (a typo there would otherwise silently lose that image's fixations).
    """
    out: dict[str, dict[str, list]] = {}
    unknown: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a BOM from spreadsheet exports
            reader = csv.reader(fh)
            header = next(reader, None)
            cols = [c.strip().lower() for c in header or []]
            missing = [c for c in ("image", "x", "y") if c not in cols]
            if missing or len(set(cols)) != len(cols):
                what = f"lacks {', '.join(missing)}" if missing else "repeats a column"
                raise DatasetError(f"{path} line 1: the header {','.join(header or [])!r} {what}; the first line must "
                                   "name the columns image,x,y[,observer] (x, y: 0-based pixels)")
            ii, xi, yi = cols.index("image"), cols.index("x"), cols.index("y")
            oi = cols.index("observer") if "observer" in cols else None
            for row in reader:
                line = reader.line_num
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(cols):
                    raise DatasetError(f"{path} line {line}: {len(row)} fields, expected {len(cols)} "
                                       f"({','.join(cols)}); fix the row")
                name = row[ii].strip().replace("\\", "/").removeprefix("./")
                if not name:
                    raise DatasetError(f"{path} line {line}: empty image name; fix the row")
                x = _csv_number(row[xi], "x", path, line) - offset
                y = _csv_number(row[yi], "y", path, line) - offset
                if name not in images:
                    unknown.setdefault(name, line)
                observer = row[oi].strip() if oi is not None else ""
                out.setdefault(name, {}).setdefault(observer, []).append((x, y))
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV ({first_line(exc)}); save it as comma-separated text") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    if unknown:
        first, line = next(iter(unknown.items()))
        raise DatasetError(f"{path}: {len(unknown)} image name(s) are not under images/, e.g. {first!r} (line {line}); "
                           "names are paths relative to images/, such as a.jpg or sub/b.png")
    return out


def _map_points(map_path: Path, image: Path, shape: tuple[int, int]) -> np.ndarray:
    from PIL import UnidentifiedImageError

    from fastsal.images import open_header

    try:
        with open_header(map_path) as im:
            multi_band = im.mode == "P" or len(im.getbands()) > 1
            arr = np.asarray(np.asarray(im.convert("RGB")).any(axis=-1) if multi_band else np.asarray(im) != 0)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{map_path}: not a readable PNG ({type(exc).__name__}); re-save the fixation map") from None
    if arr.shape != shape:
        raise DatasetError(f"{map_path}: fixation map is {arr.shape[0]}x{arr.shape[1]} (HxW) but its image {image} is "
                           f"{shape[0]}x{shape[1]}; save each map at its image's size")
    return points_from_map(arr)


def _folder_maps(maps_dir: Path, images: dict[str, Path]) -> dict[str, Path]:
    """image name -> its map ``maps/<name without suffix>.png``; a map without an image, or two
    images that would share one map, is an error."""
    by_stem: dict[str, str] = {}
    for name in images:
        stem = name.rsplit(".", 1)[0]
        if stem in by_stem:
            raise DatasetError(f"{maps_dir}: images {by_stem[stem]} and {name} would share the map {stem}.png; "
                               "rename one of them")
        by_stem[stem] = name
    from fastsal.images import walk_images

    found, orphans = {}, []
    for f in sorted(walk_images(maps_dir, (".png",), hidden_folders=False, unreadable=False)):
        rel = f.relative_to(maps_dir)
        if not f.is_file():
            continue
        stem = rel.with_suffix("").as_posix()
        if stem in by_stem:
            found[by_stem[stem]] = f
        else:
            orphans.append(rel.as_posix())
    if orphans:
        raise DatasetError(f"{maps_dir}: {len(orphans)} map(s) have no image under images/, e.g. {orphans[0]}; "
                           "name each map after its image's path, with .png (images/sub/a.jpg -> maps/sub/a.png)")
    return found


def load_folder(root: str | Path, split: str | None = None) -> list[Sample]:
    """Your own data: a folder of images with fixations as a CSV of points or as binary maps.

    Layout (``root`` = the folder):

    * ``images/``: the stimuli, any format :mod:`fastsal.images` reads, of any size and aspect,
      in nested folders if you like. A sample's name is its path relative to ``images/``
      (``sub/a.jpg``).
    * Either ``fixations.csv``: a header row naming the columns ``image,x,y`` and optionally
      ``observer`` (other columns are ignored), then one fixation per row; ``image`` is the name
      above and ``x``, ``y`` are **0-based pixel coordinates** of the image as stored (column, row;
      ``"coordinates": "1-based"`` in ``dataset.json`` for MATLAB-style data). With an ``observer``
      column each observer's fixations stay apart (the gold standard can be computed); without
      it an image's fixations are one pooled observer.
    * Or ``maps/``: one binary fixation map per image, ``maps/<name without suffix>.png`` (any
      non-zero pixel is a fixation), of the image's size. One pooled observer per image.
    * Optional ``splits.json``: ``{"train": [...], "val": [...], "test": [...]}`` of names. Without
      it only ``split=None`` (every image) works: there is no split to guess for your data.
    * Optional ``dataset.json``: ``{"pixels_per_degree": 35}`` (the one-degree density sigma in
      pixels; without it :data:`fastsal.defaults.SIGMA_PX` is used), and ``"coordinates"``.

    Malformed CSV rows (with their line number), CSV names that are no image, maps without an
    image and maps of the wrong size are errors. Points outside their image are dropped and
    images without any fixation are left out, each reported in one :class:`DatasetWarning` line.
    """
    root = Path(root)
    check_split(split)
    images = _folder_images(root / "images")
    ppd, offset = _folder_config(root)
    csv_path, maps_dir = root / "fixations.csv", root / "maps"
    if csv_path.is_file() and maps_dir.is_dir():
        raise DatasetError(f"{root}: both fixations.csv and maps/ present; keep the one that holds the fixations")
    if not csv_path.is_file() and not maps_dir.is_dir():
        raise DatasetError(f"{csv_path}: not found (nor maps/); pass {{option}} pointing at a folder holding "
                           f"{FOLDER_LAYOUT}", option="root")
    if split is None:
        names = list(images)
    else:
        if not (root / "splits.json").is_file():
            raise DatasetError(f"{root / 'splits.json'}: not found, so there is no {split!r} split; add one such as "
                               f"{_SPLITS_EXAMPLE} (names relative to images/)")
        names = read_split(root, split, dataset="folder")
        missing = [n for n in names if n not in images]
        if missing:
            raise DatasetError(f"{root / 'splits.json'}: {len(missing)} name(s) of {split!r} are not under images/, "
                               f"e.g. {missing[0]!r}; names are paths relative to images/")
    if csv_path.is_file():
        return keep_fixated(_csv_samples(csv_path, images, names, ppd, offset), csv_path)
    return keep_fixated(_map_samples(maps_dir, images, names, ppd), maps_dir)


def _csv_samples(csv_path: Path, images: dict[str, Path], names: list[str], ppd: float | None,
                 offset: float) -> list[Sample]:
    """The samples of ``names`` with their ``fixations.csv`` points, per observer; points outside
    their image are dropped and counted in one warning."""
    table = _read_fixations_csv(csv_path, images, offset)
    samples, outside = [], 0
    for name in names:
        observers = []
        shape = image_size(images[name])
        for points in table.get(name, {}).values():
            kept, n_out = inside(np.asarray(points, dtype=np.float64).reshape(-1, 2), shape)
            observers.append(kept)
            outside += n_out
        samples.append(Sample(name, images[name], *shape, tuple(observers), ppd))
    if outside:
        warn(f"{csv_path}: {outside} fixation(s) outside their image were dropped")
    return samples


def _map_samples(maps_dir: Path, images: dict[str, Path], names: list[str], ppd: float | None) -> list[Sample]:
    """The samples of ``names`` with the points of their binary map, one pooled observer."""
    maps = _folder_maps(maps_dir, images)
    samples = []
    for name in names:
        shape = image_size(images[name])
        observers = (_map_points(maps[name], images[name], shape),) if name in maps else ()
        samples.append(Sample(name, images[name], *shape, observers, ppd))
    return samples

