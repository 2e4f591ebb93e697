"""CAT2000, SALICON and generic-folder readers, each on a small fixture written here in the
dataset's public file format; the registry; and `fastsal train` / `fastsal evaluate` on each."""
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fastsal import defaults
from fastsal.cli import main
from fastsal.data import (
    DATASETS,
    DatasetError,
    DatasetWarning,
    load_cat2000,
    load_dataset,
    load_folder,
    load_salicon,
)
from fastsal.data.datasets import image_size
from fastsal.evaluate import evaluate, gold_standard_note, maps_from_folder
from fastsal.images import load_rgb

CAT2000_SHAPE = (27, 48)  # CAT2000's 16:9 at a fraction of 1080x1920: the reader reads sizes from headers
SALICON_SHAPE = (48, 64)  # SALICON's 4:3 (480x640), likewise


def _jpeg(path, shape, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


# --- CAT2000 -------------------------------------------------------------------------------------

def write_cat2000(root, categories=("Action", "Art"), per_category=10):
    """trainSet/Stimuli/<Category>/<NNN>.jpg, FIXATIONLOCS/<Category>/<NNN>.mat (fixLocs), and the
    unused FIXATIONMAPS/ and Stimuli/<Category>/Output/ of the public release."""
    h, w = CAT2000_SHAPE
    rng = np.random.default_rng(0)
    maps = {}
    for c, category in enumerate(categories):
        for i in range(1, per_category + 1):
            name = f"{category}/{i:03d}"
            _jpeg(root / "trainSet" / "Stimuli" / f"{name}.jpg", CAT2000_SHAPE, seed=c * 100 + i)
            fix = np.zeros((h, w))
            fix[rng.integers(0, h, 6), rng.integers(0, w, 6)] = 1.0
            (root / "trainSet" / "FIXATIONLOCS" / category).mkdir(parents=True, exist_ok=True)
            savemat(root / "trainSet" / "FIXATIONLOCS" / f"{name}.mat", {"fixLocs": fix})
            _jpeg(root / "trainSet" / "FIXATIONMAPS" / f"{name}.jpg", CAT2000_SHAPE)
            maps[f"{name}.jpg"] = fix
    _jpeg(root / "trainSet" / "Stimuli" / categories[0] / "Output" / "001.jpg", CAT2000_SHAPE)
    return maps


@pytest.fixture(scope="module")
def cat2000_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cat2000")
    write_cat2000(root)
    return root


def test_cat2000_reads_pooled_fixation_maps(tmp_path):
    maps = write_cat2000(tmp_path)
    samples = load_cat2000(tmp_path)
    assert [s.name for s in samples] == sorted(maps)  # Output/ and FIXATIONMAPS/ are not read
    s = samples[0]
    assert s.name == "Action/001.jpg" and s.shape == CAT2000_SHAPE and s.pixels_per_degree == 38.0
    assert len(s.observers) == 1  # one pooled "observer": the release has no per-observer data
    ys, xs = np.nonzero(maps[s.name])
    assert sorted(map(tuple, s.fixations)) == sorted(zip(xs.astype(float), ys.astype(float)))
    assert s.image_path == tmp_path / "trainSet" / "Stimuli" / "Action" / "001.jpg"
    # the trainSet folder itself is accepted as the root too
    assert [x.name for x in load_cat2000(tmp_path / "trainSet")] == [x.name for x in samples]


def test_cat2000_seeded_split_is_fixed_and_per_category(cat2000_root):
    parts = {split: [s.name for s in load_dataset("cat2000", cat2000_root, split)] for split in ("train", "val", "test")}
    assert {k: len(v) for k, v in parts.items()} == {"train": 16, "val": 2, "test": 2}  # 80/10/10 per category
    assert sorted(sum(parts.values(), [])) == [s.name for s in load_cat2000(cat2000_root)]
    # Pinned: the split is a function of the names alone (SHA-256), the same on every machine and run.
    assert parts["val"] == ["Action/006.jpg", "Art/007.jpg"]
    assert parts["test"] == ["Action/007.jpg", "Art/005.jpg"]
    assert parts == {split: [s.name for s in load_cat2000(cat2000_root, split)] for split in parts}


def test_cat2000_splits_json_wins(tmp_path):
    write_cat2000(tmp_path, categories=("Action",), per_category=3)
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["Action/003.jpg", "Action/001.jpg"],
                                                       "val": ["Action/002.jpg"], "test": []}))
    assert [s.name for s in load_cat2000(tmp_path, "train")] == ["Action/003.jpg", "Action/001.jpg"]
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["Action/009.jpg"], "val": [], "test": []}))
    with pytest.raises(DatasetError, match=r"splits.json: 1 image\(s\) of 'train' not under .*Action/009.jpg"):
        load_cat2000(tmp_path, "train")


def test_cat2000_bad_files(tmp_path):
    with pytest.raises(DatasetError, match="no Stimuli/ and FIXATIONLOCS/.*trainSet/Stimuli/<Category>"):
        load_cat2000(tmp_path)
    write_cat2000(tmp_path, categories=("Art",), per_category=2)
    locs = tmp_path / "trainSet" / "FIXATIONLOCS" / "Art"
    savemat(locs / "001.mat", {"fixLocs": np.ones((10, 10))})
    with pytest.raises(DatasetError, match=r"001.mat: fixation map is 10x10 .* its image .*001.jpg is 27x48"):
        load_cat2000(tmp_path)
    savemat(locs / "001.mat", {"other": np.ones((2, 2))})
    with pytest.raises(DatasetError, match="001.mat: no variable 'fixLocs'"):
        load_cat2000(tmp_path)
    (locs / "001.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="001.mat: cannot read MATLAB file"):
        load_cat2000(tmp_path)
    (locs / "001.mat").unlink()
    with pytest.raises(DatasetError, match="001.mat: not found; every stimulus needs its FIXATIONLOCS file"):
        load_cat2000(tmp_path)
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        load_cat2000(tmp_path, "dev")


def test_cat2000_empty_map_is_left_out_with_one_warning(tmp_path):
    write_cat2000(tmp_path, categories=("Art",), per_category=3)
    savemat(tmp_path / "trainSet" / "FIXATIONLOCS" / "Art" / "002.mat", {"fixLocs": np.zeros(CAT2000_SHAPE)})
    with pytest.warns(DatasetWarning, match=r"1 image\(s\) have no fixations and are left out: Art/002.jpg"):
        samples = load_cat2000(tmp_path)
    assert [s.name for s in samples] == ["Art/001.jpg", "Art/003.jpg"]


def test_single_observer_skips_gold_standard_with_a_note(cat2000_root):
    train, test = load_cat2000(cat2000_root, "train"), load_cat2000(cat2000_root, "test")
    assert "fewer than 2 observers" in gold_standard_note(test)
    report = evaluate(test, {}, train_samples=train, metrics=["nss", "auc_judd"], progress=False)
    assert set(report["results"]) == {"centre bias", "uniform"}
    assert len(report["notes"]) == 1 and report["notes"][0].startswith("gold standard left out: 2 of 2 images")


def test_maps_matched_by_nested_name(cat2000_root, tmp_path):
    samples = load_cat2000(cat2000_root, "test")  # Action/007.jpg, Art/005.jpg
    for i, s in enumerate(samples):
        (tmp_path / "nested" / s.name.split("/")[0]).mkdir(parents=True)
        np.save(tmp_path / "nested" / f"{s.name[:-4]}.npy", np.full(s.shape, i + 1.0))
    read = maps_from_folder(tmp_path / "nested", samples)
    assert [read(s)[0, 0] for s in samples] == [1.0, 2.0]
    # a flat folder may hold one image's map by its bare stem, never one map for two images
    (tmp_path / "flat").mkdir()
    for stem in ("007", "005", "001"):
        np.save(tmp_path / "flat" / f"{stem}.npy", np.full(CAT2000_SHAPE, float(stem)))
    read = maps_from_folder(tmp_path / "flat", samples)
    assert [read(s)[0, 0] for s in samples] == [7.0, 5.0]
    twins = load_cat2000(cat2000_root)
    twins = [s for s in twins if s.name.endswith("/001.jpg")]  # Action/001.jpg and Art/001.jpg
    with pytest.raises(DatasetError, match=r"no saliency map for 2 of 2 images \(Action/001, Art/001\)"):
        maps_from_folder(tmp_path / "flat", twins)


# --- SALICON -------------------------------------------------------------------------------------

GAZE = [("location", object), ("timestamp", object), ("fixations", object)]


def _gaze(observers, fields=GAZE):
    """A 1 x N MATLAB struct array, one entry per observer, as in SALICON's 2017 .mat files."""
    gaze = np.empty((1, len(observers)), dtype=fields)
    for i, fix in enumerate(observers):
        fix = np.asarray(fix, dtype=np.float64).reshape(-1, 2)
        loc = np.concatenate([fix, fix + 0.5]) if len(fix) else np.zeros((0, 2))
        entry = {"location": loc, "timestamp": np.arange(len(loc), dtype=np.float64)[:, None] * 8, "fixations": fix}
        gaze[0, i] = tuple(entry[name] for name, _ in fields)
    return gaze


def write_salicon(root, counts=(("train", 4), ("val", 3)), n_test=2):
    """images/{train,val,test}/COCO_<split>2014_<12 digits>.jpg and fixations/{train,val}/....mat
    with variables image, resolution and gaze (1-based [x, y])."""
    h, w = SALICON_SHAPE
    rng = np.random.default_rng(1)
    for split, n in (*counts, ("test", n_test)):
        for k in range(n):
            stem = f"COCO_{split}2014_{k + 1:012d}"
            _jpeg(root / "images" / split / f"{stem}.jpg", SALICON_SHAPE, seed=k)
            if split == "test":
                continue
            observers = [np.stack([rng.integers(1, w + 1, 5), rng.integers(1, h + 1, 5)], axis=1) for _ in range(3)]
            (root / "fixations" / split).mkdir(parents=True, exist_ok=True)
            savemat(root / "fixations" / split / f"{stem}.mat",
                    {"image": stem, "resolution": np.array([[h, w]]), "gaze": _gaze(observers)})


@pytest.fixture(scope="module")
def salicon_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("salicon")
    write_salicon(root)
    return root


def test_salicon_reads_per_observer_fixations(tmp_path):
    write_salicon(tmp_path, counts=(("train", 1), ("val", 1)))
    mat = tmp_path / "fixations" / "train" / "COCO_train2014_000000000001.mat"
    # one observer with one fixation (MATLAB's 1 x 2, squeezed), one with none, one with two
    savemat(mat, {"image": mat.stem, "resolution": np.array([[48, 64]]),
                  "gaze": _gaze([[[10, 20]], np.zeros((0, 2)), [[1, 1], [64, 48]]])})
    (s,) = load_salicon(tmp_path, "train")
    assert s.name == "COCO_train2014_000000000001.jpg" and s.shape == SALICON_SHAPE and s.pixels_per_degree == 19.0
    assert [o.tolist() for o in s.observers] == [[[9.0, 19.0]], [], [[0.0, 0.0], [63.0, 47.0]]]  # 1-based -> 0-based
    assert [x.name for x in load_salicon(tmp_path)] == [s.name, "COCO_val2014_000000000001.jpg"]


def test_salicon_single_observer_file(tmp_path):
    write_salicon(tmp_path, counts=(("train", 1), ("val", 1)))
    mat = tmp_path / "fixations" / "val" / "COCO_val2014_000000000001.mat"
    savemat(mat, {"gaze": _gaze([[[3, 4], [5, 6]]])})  # 1 x 1 struct, squeezed to one struct; no resolution
    (s,) = load_salicon(tmp_path, "val")
    assert [o.tolist() for o in s.observers] == [[[2.0, 3.0], [4.0, 5.0]]]


def test_salicon_falls_back_to_mouse_locations_with_a_warning(tmp_path):
    write_salicon(tmp_path, counts=(("train", 2), ("val", 1)))
    mat = tmp_path / "fixations" / "train" / "COCO_train2014_000000000002.mat"
    savemat(mat, {"gaze": _gaze([[[3, 4]]], fields=GAZE[:2])})  # location and timestamp only
    with pytest.warns(DatasetWarning, match="1 file.* no 'fixations' field.*'location'.*COCO_train2014_000000000002"):
        samples = load_salicon(tmp_path, "train")
    assert samples[1].observers[0].tolist() == [[2.0, 3.0], [2.5, 3.5]]


def test_salicon_drops_points_outside_the_image(tmp_path):
    write_salicon(tmp_path, counts=(("train", 1), ("val", 1)))
    mat = tmp_path / "fixations" / "train" / "COCO_train2014_000000000001.mat"
    savemat(mat, {"gaze": _gaze([[[10, 10], [0, 5], [65, 5]], [[4, 49], [2, 2]]])})
    with pytest.warns(DatasetWarning, match=r"fixations: 3 fixation\(s\) outside their image were dropped"):
        (s,) = load_salicon(tmp_path, "train")
    assert [o.tolist() for o in s.observers] == [[[9.0, 9.0]], [[1.0, 1.0]]]


def test_salicon_test_split_and_bad_files(tmp_path, salicon_root):
    from fastsal.cli import cli_message

    with pytest.raises(DatasetError, match="SALICON's test split has no public fixations.*use split val") as info:
        load_salicon(salicon_root, "test")
    assert cli_message(info.value).endswith("use --split val")
    with pytest.raises(DatasetError, match=r"fixations: no such folder; .*images/\{train,val,test\}"):
        load_salicon(tmp_path)
    write_salicon(tmp_path, counts=(("train", 1), ("val", 1)))
    mat = tmp_path / "fixations" / "train" / "COCO_train2014_000000000001.mat"
    savemat(mat, {"resolution": np.array([[480, 640]]), "gaze": _gaze([[[1, 1]]])})
    with pytest.raises(DatasetError, match=r"recorded at 480x640 .* is 48x64; restore the original SALICON images"):
        load_salicon(tmp_path, "train")
    savemat(mat, {"gaze": np.zeros((1, 2))})
    with pytest.raises(DatasetError, match="gaze entry 1 has neither 'fixations' nor 'location'"):
        load_salicon(tmp_path, "train")
    savemat(mat, {"image": "x"})
    with pytest.raises(DatasetError, match="no variable 'gaze'"):
        load_salicon(tmp_path, "train")
    (tmp_path / "images" / "train" / "COCO_train2014_000000000001.jpg").unlink()
    with pytest.raises(DatasetError, match="COCO_train2014_000000000001.jpg: not found; the fixations .* need their image"):
        load_salicon(tmp_path, "train")


# --- Generic folder ------------------------------------------------------------------------------

FOLDER_CSV = """image,x,y,observer
a.jpg,10,5,ann
a.jpg,20.5,6,bob
a.jpg,30,7,ann
sub/b.png,1,58,ann
sub/b.png,39,0,bob
"""


def write_folder(root, csv_text=FOLDER_CSV, splits=None):
    """images/ of mixed formats, sizes, aspects and nesting; fixations.csv; optional splits.json."""
    _jpeg(root / "images" / "a.jpg", (40, 60))  # landscape
    (root / "images" / "sub").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((60, 40), dtype=np.uint8)).save(root / "images" / "sub" / "b.png")  # portrait, grey
    _jpeg(root / "images" / "c.jpg", (32, 32))  # no fixations
    (root / "images" / "notes.txt").write_text("not an image")
    if csv_text is not None:
        (root / "fixations.csv").write_text(csv_text)
    if splits is not None:
        (root / "splits.json").write_text(json.dumps(splits))


def test_folder_csv_per_observer(tmp_path):
    write_folder(tmp_path)
    with pytest.warns(DatasetWarning, match=r"fixations.csv: 1 image\(s\) have no fixations and are left out: c.jpg"):
        samples = load_folder(tmp_path)
    a, b = samples
    assert (a.name, a.shape, b.name, b.shape) == ("a.jpg", (40, 60), "sub/b.png", (60, 40))
    assert [o.tolist() for o in a.observers] == [[[10.0, 5.0], [30.0, 7.0]], [[20.5, 6.0]]]  # ann, bob
    assert a.pixels_per_degree is None and a.image_path == tmp_path / "images" / "a.jpg"
    assert gold_standard_note(samples) is None


def test_folder_without_observer_column_pools_and_dataset_json(tmp_path):
    write_folder(tmp_path, csv_text="Image , X , Y ,duration\na.jpg,1,1,200\na.jpg,60,40,300\nsub/b.png,40,60,100\n")
    (tmp_path / "dataset.json").write_text(json.dumps({"pixels_per_degree": 30, "coordinates": "1-based"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        a, b = load_folder(tmp_path)
    assert len(a.observers) == 1 and a.observers[0].tolist() == [[0.0, 0.0], [59.0, 39.0]]
    assert a.pixels_per_degree == 30.0 and a.sigma_px() == 30.0
    assert "fewer than 2 observers" in gold_standard_note([a, b])


def test_folder_drops_points_outside_with_a_count(tmp_path):
    write_folder(tmp_path, csv_text="image,x,y\na.jpg,-0.6,3\na.jpg,59.4,3\na.jpg,59.5,3\na.jpg,3,40\nc.jpg,99,0\n"
                                    "sub/b.png,2,2\n")
    with pytest.warns(DatasetWarning) as caught:
        samples = load_folder(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any(m.endswith("fixations.csv: 4 fixation(s) outside their image were dropped") for m in messages)
    assert any(m.endswith("fixations.csv: 1 image(s) have no fixations and are left out: c.jpg") for m in messages)
    assert [s.name for s in samples] == ["a.jpg", "sub/b.png"]
    assert samples[0].fixations.tolist() == [[59.4, 3.0]]


@pytest.mark.parametrize("csv_text, message", [
    ("x,y\n1,2\n", r"line 1: the header 'x,y' lacks image; the first line must name the columns image,x,y\[,observer\]"),
    ("", "line 1: the header '' lacks image, x, y"),
    ("image,x,y,x\na.jpg,1,2,3\n", "line 1: .* repeats a column"),
    ("image,x,y\na.jpg,1,2\n\na.jpg,1\n", "fixations.csv line 4: 2 fields, expected 3 \\(image,x,y\\)"),
    ("image,x,y\na.jpg,one,2\n", "fixations.csv line 2: x 'one' is not a number"),
    ("image,x,y\na.jpg,1,nan\n", "fixations.csv line 2: y is 'nan', not a finite number"),
    ("image,x,y\n,1,2\n", "line 2: empty image name"),
    ("image,x,y\na.jpg,1,2\nA.JPG,1,2\nzz/q.jpg,3,3\nA.JPG,1,1\n",
     r"fixations.csv: 2 image name\(s\) are not under images/, e.g. 'A.JPG' \(line 3\); names are paths relative"),
])
def test_folder_csv_errors_name_the_line(tmp_path, csv_text, message):
    write_folder(tmp_path, csv_text=csv_text)
    with pytest.raises(DatasetError, match=message):
        load_folder(tmp_path)


def test_folder_splits(tmp_path):
    write_folder(tmp_path)
    with pytest.raises(DatasetError, match=r"splits.json: not found, so there is no 'train' split; add one such as "
                                           r"\{\"train\": \[\"a.jpg\", \.\.\.\]"):
        load_folder(tmp_path, "train")
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["sub/b.png", "a.jpg"], "val": ["c.jpg"], "test": []}))
    assert [s.name for s in load_folder(tmp_path, "train")] == ["sub/b.png", "a.jpg"]
    with pytest.warns(DatasetWarning, match="c.jpg"):
        assert load_folder(tmp_path, "val") == []
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["b.png"], "val": [], "test": []}))
    with pytest.raises(DatasetError, match=r"splits.json: 1 name\(s\) of 'train' are not under images/, e.g. 'b.png'"):
        load_folder(tmp_path, "train")


def test_folder_maps(tmp_path):
    write_folder(tmp_path, csv_text=None)
    (tmp_path / "maps" / "sub").mkdir(parents=True)
    fmap = np.zeros((40, 60), dtype=np.uint8)
    fmap[5, 10] = fmap[7, 30] = 255
    Image.fromarray(fmap).save(tmp_path / "maps" / "a.png")
    rgb = np.zeros((60, 40, 3), dtype=np.uint8)
    rgb[58, 1] = (0, 0, 1)  # any non-zero channel counts
    Image.fromarray(rgb).save(tmp_path / "maps" / "sub" / "b.png")
    with pytest.warns(DatasetWarning, match=r"maps: 1 image\(s\) have no fixations .*: c.jpg"):
        a, b = load_folder(tmp_path)
    assert sorted(a.fixations.tolist()) == [[10.0, 5.0], [30.0, 7.0]] and len(a.observers) == 1
    assert b.fixations.tolist() == [[1.0, 58.0]]
    Image.fromarray(np.ones((40, 60), dtype=np.uint8)).save(tmp_path / "maps" / "sub" / "b.png")
    with pytest.raises(DatasetError, match=r"b.png: fixation map is 40x60 \(HxW\) but its image .*b.png is 60x40"):
        load_folder(tmp_path)
    Image.fromarray(fmap).save(tmp_path / "maps" / "zz.png")
    with pytest.raises(DatasetError, match=r"maps: 1 map\(s\) have no image under images/, e.g. zz.png"):
        load_folder(tmp_path)


def test_folder_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="images: no such folder; .*fixations.csv \\(header image,x,y"):
        load_folder(tmp_path)
    write_folder(tmp_path, csv_text=None)
    with pytest.raises(DatasetError, match="fixations.csv: not found \\(nor maps/\\)"):
        load_folder(tmp_path)
    (tmp_path / "maps").mkdir()
    (tmp_path / "fixations.csv").write_text(FOLDER_CSV)
    with pytest.raises(DatasetError, match="both fixations.csv and maps/ present"):
        load_folder(tmp_path)
    (tmp_path / "maps").rmdir()
    for text, message in [("{", "dataset.json: not valid JSON"), ("[]", "expected a JSON object"),
                          ('{"ppd": 3}', "unknown key 'ppd'"), ('{"pixels_per_degree": -1}', "positive number"),
                          ('{"coordinates": "1"}', 'coordinates must be "0-based" or "1-based"')]:
        (tmp_path / "dataset.json").write_text(text)
        with pytest.raises(DatasetError, match=message):
            load_folder(tmp_path)


def test_image_size_follows_exif_orientation(tmp_path):
    """A photo stored landscape with 'rotate 90' in EXIF is portrait to the model: sizes must agree."""
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(path, exif=exif)
    assert image_size(path) == load_rgb(path).shape[:2] == (60, 40)


# --- Registry and command line -------------------------------------------------------------------

def test_registry_matches_defaults():
    """--help lists defaults.DATASET_NAMES without importing the readers: both must agree."""
    assert tuple(DATASETS) == defaults.DATASET_NAMES
    assert all(info.name == name and info.layout for name, info in DATASETS.items())


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    rows = ["image,x,y,observer"]
    rng = np.random.default_rng(2)
    names = [f"im{i}.jpg" for i in range(6)]
    for i, name in enumerate(names):
        _jpeg(root / "images" / name, (40, 60) if i % 2 else (60, 40), seed=i)
        for obs in ("p1", "p2"):
            rows += [f"{name},{x},{y},{obs}" for x, y in rng.integers(0, 40, (4, 2))]
    rows.append("im0.jpg,500,500,p1")  # outside: dropped with a warning
    (root / "fixations.csv").write_text("\n".join(rows) + "\n")
    (root / "splits.json").write_text(json.dumps({"train": names[:3], "val": names[3:4], "test": names[4:]}))
    return root


@pytest.mark.parametrize("dataset, split", [("cat2000", "test"), ("salicon", "val"), ("folder", "test")])
def test_cli_train_then_evaluate(dataset, split, cat2000_root, salicon_root, folder_root, tmp_path, capsys):
    root = {"cat2000": cat2000_root, "salicon": salicon_root, "folder": folder_root}[dataset]
    out = tmp_path / "run"
    assert main(["train", "--model", "fastsal_bare", "--data", f"{dataset}={root}", "--out", str(out),
                 "--epochs", "1", "--batch-size", "2", "--input-size", "64x96", "--backbone-weights", "none",
                 "--limit", "3", "--threads", "1", "--no-progress"]) == 0
    assert (out / "best.pt").is_file()
    report = tmp_path / "r.json"
    assert main(["evaluate", "--weights", str(out / "best.pt"), "--backend", "torch", "--dataset", dataset,
                 "--root", str(root), "--split", split, "--limit", "2", "--input-size", "64x96",
                 "--metrics", "nss", "auc_judd", "--threads", "1", "--json", str(report), "-q"]) == 0
    res = json.loads(report.read_text())
    assert res["config"]["dataset"] == dataset and res["config"]["n_images"] == 2
    err = capsys.readouterr().err
    if dataset == "cat2000":  # pooled observers: one note line, no gold-standard row
        assert "gold standard" not in res["results"]
        assert "fastsal: note: gold standard left out: 2 of 2 images" in err
    else:
        assert "gold standard" in res["results"] and "note: gold" not in err
    if dataset == "folder":  # one line per warning, no Python file:line noise
        assert "fastsal: warning: " in err and "fixation(s) outside their image were dropped" in err
        assert "DatasetWarning" not in err


def test_cli_salicon_test_split_is_one_line(salicon_root, tmp_path, capsys):
    assert main(["evaluate", "--maps", str(tmp_path), "--dataset", "salicon", "--root", str(salicon_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "SALICON's test split has no public fixations" in err
