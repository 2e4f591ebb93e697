"""Teachers: ensembles and TTA give valid log-densities; identity; adapters; one-line errors."""
import numpy as np
import pytest
import torch
from distill_util import SIZE, teacher_checkpoint, write_images
from scipy.special import logsumexp

from fastsal.cli import cli_message
from fastsal.images import load_rgb
from fastsal.teacher import CallableTeacher, Teacher, TeacherError
from fastsal.tta import TTA, TTAError


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teachers")
    return {"a": teacher_checkpoint(tmp / "a.pt", 0), "b": teacher_checkpoint(tmp / "b.pt", 1, aspect=False),
            "images": write_images(tmp / "images", 3)}


def _ensemble(sources, tta="flip,scales=64x96+96x128", **kw):
    return Teacher([str(sources["a"]), str(sources["b"])], tta=tta, backend="torch", **kw)


def test_ensemble_with_tta_is_a_log_density(sources):
    teacher = _ensemble(sources)
    assert teacher.resolution == (96, 128) and teacher.runs_per_image == 8  # 2 sources x 2 flips x 2 scales
    portrait = np.ascontiguousarray(load_rgb(sources["images"][0]).transpose(1, 0, 2))  # 96x64: its own aspect
    for image in [sources["images"][0], portrait]:
        logp = teacher.log_density(image)
        h, w = load_rgb(image).shape[:2] if not isinstance(image, np.ndarray) else image.shape[:2]
        assert logp.shape == teacher.output_size((h, w)) and logp.dtype == np.float64
        assert np.isfinite(logp).all() and abs(logsumexp(logp)) < 1e-9
        assert logp.std() > 1e-3  # a map, not a uniform density
    assert teacher.log_density(portrait).shape[0] > teacher.log_density(portrait).shape[1]
    views = torch.rand(2, 3, *SIZE)
    labels = teacher.label_views(views)
    assert labels.shape == (2, *SIZE) and labels.dtype == torch.float32
    assert torch.logsumexp(labels.double().flatten(1), 1).abs().max() < 1e-5


def test_ensemble_is_the_renormalised_mean_of_its_members(sources):
    teacher = _ensemble(sources)
    members = teacher.member_log_densities(sources["images"][1])
    assert set(members) == {"a", "b"} and all(abs(logsumexp(m)) < 1e-9 for m in members.values())
    mean = (members["a"] + members["b"]) / 2
    np.testing.assert_allclose(teacher.log_density(sources["images"][1]), mean - logsumexp(mean), atol=1e-9)
    single = Teacher([str(sources["a"])], tta="flip,scales=64x96+96x128", backend="torch")
    np.testing.assert_allclose(single.log_density(sources["images"][1]), members["a"], atol=1e-9)


def test_flip_tta_makes_the_label_mirror_symmetric(sources):
    teacher = _ensemble(sources)
    rgb = load_rgb(sources["images"][2])
    mirrored = np.ascontiguousarray(rgb[:, ::-1])
    np.testing.assert_allclose(teacher.log_density(mirrored), teacher.log_density(rgb)[:, ::-1], atol=2e-3)
    views = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(teacher.label_views(views.flip(-1)), teacher.label_views(views).flip(-1), atol=1e-4,
                               rtol=0)


def test_identity_is_stable_and_covers_what_shapes_the_labels(sources):
    first = _ensemble(sources)
    ident = first.identity()
    first.log_density(sources["images"][0])  # running a squash source at other scales changes nothing
    assert first.identity() == ident and _ensemble(sources).sha256 == ident["sha256"]
    assert ident["centre_bias"].startswith("none") and ident["tta"] == {"flip": True, "scales": [[64, 96], [96, 128]]}
    assert ident["input_sizes"] == {"a": [[64, 96], [96, 128]], "b": [[64, 96], [96, 128]]}
    assert {s["source"] for s in ident["sources"]} == {"a", "b"} and all(s["weights_sha256"] for s in ident["sources"])
    others = [_ensemble(sources, tta="flip"), _ensemble(sources, resolution=(64, 96)),
              Teacher([str(sources["a"])], tta="flip,scales=64x96+96x128", backend="torch")]
    assert len({t.sha256 for t in others} | {ident["sha256"]}) == 4


def test_callable_teacher_adapter(sources, tmp_path):
    calls = []

    def centre(rgb):  # any image -> log-density function: here an unnormalised centred Gaussian
        calls.append(rgb.shape)
        h, w = rgb.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        return -(((yy - h / 2) / h) ** 2 + ((xx - w / 2) / w) ** 2) * 8.0

    teacher = Teacher([CallableTeacher(centre, name="centre", version="1")], tta="flip", resolution=SIZE)
    logp = teacher.log_density(sources["images"][0])
    assert calls == [(64, 96, 3), (64, 96, 3)] and abs(logsumexp(logp)) < 1e-9
    assert np.unravel_index(logp.argmax(), logp.shape) in [(31, 47), (31, 48), (32, 47), (32, 48)]
    assert Teacher([CallableTeacher(centre, name="centre", version="2")], resolution=SIZE).sha256 != teacher.sha256
    # The same function from a file, as --teacher py:FILE.py:FUNCTION (version: the file's hash).
    adapter = tmp_path / "my_teacher.py"
    adapter.write_text("import numpy as np\n\ndef saliency(rgb):\n    return np.zeros(rgb.shape[:2])\n")
    from_file = Teacher([f"py:{adapter}:saliency"], resolution=SIZE)
    assert from_file.name == "saliency" and from_file.identity()["sources"][0]["version"].startswith("sha256:")
    np.testing.assert_allclose(from_file.log_density(sources["images"][0]), -np.log(64 * 96), atol=1e-9)
    with pytest.raises(TeacherError, match="returned .* not a finite"):
        Teacher([CallableTeacher(lambda rgb: np.full((4,), np.nan), name="bad", version="1")],
                resolution=SIZE).log_density(sources["images"][0])
    with pytest.raises(TeacherError, match="has no function 'nope'"):
        Teacher([f"py:{adapter}:nope"], resolution=SIZE)


def test_exported_onnx_source_gives_the_checkpoints_labels(sources, tmp_path):
    pytest.importorskip("onnxruntime")
    from fastsal.export import export
    from fastsal.models import load_model

    model, meta = load_model(sources["a"])
    onnx = export(model, model.name, tmp_path / "a.onnx", format="onnx", input_size=SIZE, meta=meta)
    from_ckpt = Teacher([str(sources["a"])], backend="torch")
    from_onnx = Teacher([str(onnx)], backend="onnxruntime")
    assert from_onnx.identity()["sources"][0]["weights_sha256"] == from_ckpt.identity()["sources"][0]["weights_sha256"]
    np.testing.assert_allclose(from_onnx.log_density(sources["images"][0]), from_ckpt.log_density(sources["images"][0]),
                               atol=1e-3)


def test_bad_teachers_are_one_line(sources, tmp_path):
    cases = [
        (["no_such_model"], "^teacher no_such_model: unknown model"),
        ([str(tmp_path / "absent.pt")], "weights file not found"),
        ([str(sources["a"]), str(sources["a"])], "sources repeat"),
        (["default-ensemble", str(sources["a"])], "a preset names a whole teacher"),
        ([], "at least one source"),
        ([f"py:{tmp_path / 'absent.py'}:f"], "absent.py not found"),
    ]
    for srcs, message in cases:
        with pytest.raises(TeacherError, match=message) as info:
            Teacher(srcs, backend="torch")
        assert "\n" not in str(info.value)
    # The command line names the flag (issue 21: the library names the parameter, the CLI renders it).
    with pytest.raises(TeacherError) as info:
        Teacher(["no_such_model"], backend="torch")
    assert str(info.value).startswith("teacher no_such_model: unknown model")
    assert cli_message(info.value).startswith("--teacher no_such_model: unknown model")
    with pytest.raises(TeacherError, match="cannot read 'flop'"):
        Teacher([str(sources["a"])], tta="flop", backend="torch")


def test_tta_spec_round_trip():
    tta = TTA.parse("scales=192x256+288x384, flip")
    assert tta == TTA(True, ((192, 256), (288, 384))) and str(tta) == "flip,scales=192x256+288x384"
    assert TTA.parse(str(tta)) == tta and TTA.parse(None) == TTA() == TTA.parse("none") and tta.views == 4
    for bad in ("flip,scales=192x", "scales=10x10", "scales=64x64+64x64", "mirror"):
        with pytest.raises(TTAError):
            TTA.parse(bad)
