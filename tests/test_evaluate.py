"""`fastsal evaluate`: maps from folders, baselines beside the model, table/JSON/plot outputs."""
import json

import numpy as np
import pytest
from PIL import Image

from fastsal import baselines as B
from fastsal.cli import main
from fastsal.data.datasets import DatasetError, load_osie
from fastsal.evaluate import evaluate, format_table, maps_from_folder

METRICS = ["auc_judd", "nss", "cc", "kld", "information_gain"]


@pytest.fixture(scope="module")
def osie(osie_root):
    return load_osie(osie_root, "train"), load_osie(osie_root, "val")[:3]


def test_folder_of_centre_bias_maps_scores_like_the_baseline(osie, tmp_path):
    train, val = osie
    params = B.fit_centre_bias(train)
    for s in val:
        np.save(tmp_path / f"{s.name[:-4]}.npy", B.centre_bias_density(params, s.shape))
    report = evaluate(val, {"maps": maps_from_folder(tmp_path, val)}, train_samples=train,
                      baselines=["centre_bias"], metrics=METRICS, progress=False)
    res = report["results"]
    for m in METRICS:
        assert res["maps"][m]["mean"] == pytest.approx(res["centre bias"][m]["mean"], abs=1e-9)
    assert res["centre bias"]["information_gain"]["mean"] == pytest.approx(0.0, abs=1e-9)
    table = format_table(report)
    assert "centre bias" in table and "NSS" in table and "±" in table


def test_png_maps_are_read_and_resized(osie, tmp_path):
    train, val = osie
    for s in val:  # a half-size PNG peaked at the image centre
        yy, xx = np.mgrid[0:300, 0:400]
        img = np.exp(-((xx - 200) ** 2 + (yy - 150) ** 2) / (2 * 60.0**2))
        Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / f"{s.name[:-4]}.png")
    report = evaluate(val, {"png": maps_from_folder(tmp_path, val)}, baselines=["uniform"],
                      metrics=["nss", "cc"], progress=False)
    assert report["results"]["png"]["nss"]["mean"] > report["results"]["uniform"]["nss"]["mean"]


def test_missing_maps_are_listed(osie, tmp_path):
    _, val = osie
    np.save(tmp_path / f"{val[0].name[:-4]}.npy", np.ones((600, 800)))
    with pytest.raises(DatasetError, match=rf"no saliency map for 2 of 3 images \({val[1].name[:-4]}"):
        maps_from_folder(tmp_path, val)


def test_gold_standard_beats_centre_bias_beats_uniform(osie):
    train, val = osie
    report = evaluate(val, {}, train_samples=train, metrics=["auc_judd", "nss"], progress=False)
    res = report["results"]
    for m in ("auc_judd", "nss"):
        assert res["gold standard"][m]["mean"] > res["centre bias"][m]["mean"] > res["uniform"][m]["mean"]


def test_cli_evaluate_maps_json_and_plot(osie_root, osie, tmp_path):
    _, val = osie
    maps = tmp_path / "maps"
    maps.mkdir()
    for s in load_osie(osie_root, "val")[:2]:
        np.save(maps / f"{s.name[:-4]}.npy", np.random.default_rng(0).random((600, 800)))
    out = tmp_path / "r.json"
    plot = tmp_path / "grid.png"
    code = main(["evaluate", "--maps", str(maps), "--dataset", "osie", "--root", str(osie_root), "--split", "val",
                 "--limit", "2", "--metrics", "nss", "cc", "--json", str(out), "--plot", str(plot), "--no-gold"])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"maps", "centre bias", "uniform"}
    assert abs(report["results"]["maps"]["nss"]["mean"]) < 0.2  # noise
    assert Image.open(plot).size[0] > 100


def test_cli_evaluate_errors_are_one_line(osie_root, tmp_path, capsys):
    assert main(["evaluate", "--maps", str(tmp_path), "--dataset", "osie", "--root", str(osie_root),
                 "--split", "val", "--limit", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no saliency map" in err
    assert main(["evaluate", "--model", "nope", "--dataset", "osie", "--root", str(osie_root)]) == 2
    assert main(["evaluate", "--maps", str(tmp_path), "--dataset", "mit1003", "--root", str(osie_root)]) == 2
