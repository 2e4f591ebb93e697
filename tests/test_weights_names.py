"""Shipped weights have names of their own, and role aliases (``default``, ``fast``) resolve in one
place: a second set of weights of one architecture loads, exports and lists under its own name,
at its own input size."""
import json
from dataclasses import replace

import pytest

import fastsal
from fastsal import defaults
from fastsal.cli import main
from fastsal.export import read_sidecar
from fastsal.models import build
from fastsal.models.registry import ALIASES, WEIGHTS, architecture, resolve_name, save_checkpoint, weights_for

NAME = "fastsal_bare_tiny"


@pytest.fixture
def second_weights(tmp_path, monkeypatch):
    """A second set of ``fastsal_bare`` weights, trained at 64x96, registered as NAME and aliased ``fast``."""
    model = build("fastsal_bare")
    path = save_checkpoint(model, "fastsal_bare", tmp_path / f"{NAME}.pt", meta={"blur_sigma": 0.0})
    spec = replace(WEIGHTS["fastsal_bare"], name=NAME, file=str(path), input_size=(64, 96), metrics={},
                   encoder_from=None)
    monkeypatch.setitem(WEIGHTS, NAME, spec)
    monkeypatch.setitem(ALIASES, "fast", NAME)
    return spec


def test_aliases_resolve_to_shipped_names():
    assert resolve_name("default") == defaults.MODEL == weights_for("default").name
    assert resolve_name("fast") == defaults.FAST_MODEL
    assert resolve_name("fastsal_c") == "fastsal_c"
    assert architecture("default") == defaults.MODEL


def test_second_weights_load_under_their_own_name_and_size(second_weights):
    assert architecture(NAME) == architecture("fast") == "fastsal_bare"
    for name in (NAME, "fast"):
        p = fastsal.load(name, backend="torch", threads=1)
        assert p.name == NAME  # not the architecture's: manifests and the server keep the two apart
        assert p.input_size == (64, 96) and p.weights_path == second_weights.path
    assert fastsal.load("fastsal_bare", backend="torch", threads=1).name == "fastsal_bare"
    assert build("fast", pretrained=True).name == "fastsal_bare"


def test_models_lists_second_weights_with_their_alias(second_weights, capsys):
    assert main(["models", "--json"]) == 0
    entries = {e["model"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries[NAME]["architecture"] == "fastsal_bare" and entries[NAME]["aliases"] == ["fast"]
    assert entries[defaults.MODEL]["aliases"] == ["default"] and entries[defaults.MODEL]["default"] is True
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert f"{NAME} (fast)" in table and "Scene NSS" in table


def test_export_of_second_weights_runs_at_their_size(second_weights, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--model", "fast", "--format", "onnx", "-o", str(out)]) == 0
    side = read_sidecar(out)
    assert side["model"] == "fastsal_bare" and tuple(side["input_size"]) == (64, 96)


def test_unknown_model_error_offers_weights_names_and_aliases(tmp_path):
    """A user who mistypes ``fast`` is shown it: the error lists aliases and weights names, not
    just architectures."""
    import fastsal
    from fastsal.models import ModelError, build

    for call in (lambda: fastsal.load("fastt"), lambda: build("fastt")):
        with pytest.raises(ModelError) as exc:
            call()
        msg = str(exc.value)
        assert "'fastt'" in msg and "fast," in msg and "fastsal_a_effnet_lite0_fast" in msg and "\n" not in msg
