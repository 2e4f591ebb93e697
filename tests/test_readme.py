"""Every `fastsal ...` command in README.md's ```bash blocks parses, and the cheap ones run.

The commands are read from README.md itself, so a README command that no longer parses (a renamed
flag, a wrong choice) or no longer runs (a missing required option) fails here. They run in a
temporary folder holding small stand-ins at the README's own paths (``photos/``, ``photo.jpg``,
``MIT300/``, teacher checkpoints ``runs/t*/best.pt``, ...), ``../shared`` pointing at the shared
data, and long options replaced by fast ones (:data:`FAST`: one epoch on two images, two test images
scored). Commands that need hardware or a server, or whose slow part has its own test, are parsed
only, each with its reason (:data:`PARSE_ONLY`). The two set-up commands (``<!-- ci:... -->``) are
run as written by ``.ci/run``; here their ``fastsal`` part is run like any other.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastsal.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CALIBRATION = sorted((REPO / "src" / "fastsal" / "assets" / "calibration").glob("*.jpg"))

# (pattern, replacement) on a README command (``fastsal`` dropped, one line): its fast variant.
FAST: list[tuple[str, str]] = [
    (r"^(train .*)$", r"\1 --epochs 1 --limit 2 --batch-size 2 --threads 1"),
    (r"^(evaluate .*)$", r"\1 --limit 2 --threads 1 --backend torch"),
    (r"^(adapt .*)$", r"\1 --epochs 1 --batch-size 2 --threads 1"),
    (r"^(calibrate .*)$", r"\1 --limit 2 --threads 1 --backend torch -q"),
    # PyTorch: no graph conversion per new input shape (the engines have their own tests)
    (r"^((?:predict|crop)\b.*)$", r"\1 --threads 1 --quiet --backend torch"),
    (r"^(pseudo-label .*)$", r"\1 --threads 1 --backend torch"),
    # labelling MIT1003's 803 train images: the same command on the two stand-in photos
    (r"--dataset mit1003 --root \.\./shared/data/mit1003 --split train", "--images photos/"),
]
# Parsed only: what in the command makes running it here impossible or slow, and where it is tested.
PARSE_ONLY: dict[str, str] = {
    r"--camera": "needs a camera",
    r"--device cuda": "needs a GPU",
    r"--precision int8|--int8": "int8 calibration takes minutes (tests/test_backends.py, tests/test_export.py)",
    r"_int8\.xml": "reads the int8 export above",
    r"^serve\b": "starts a server (tests/test_serve.py)",
    r"--ray\b": "needs a Ray cluster (tests/test_ray.py, tests/test_ray_cluster.py)",
}


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """Each ``fastsal`` command of README.md's bash blocks, without ``fastsal``, comments and
    line continuations; commands chained with ``&&`` or ``;`` are taken apart."""
    text = readme.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            lex = shlex.shlex(line, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            words: list[str] = []
            for tok in [*lex, ";"]:
                if tok in ("&&", "||", ";", "|"):
                    if words and words[0] == "fastsal":
                        commands.append(shlex.join(words[1:]))
                    words = []
                else:
                    words.append(tok)
    return commands


COMMANDS = readme_commands()


def fast_variant(command: str) -> str:
    for pattern, replacement in FAST:
        command = re.sub(pattern, replacement, command)
    return command


def parse_only_reason(command: str) -> str | None:
    return next((why for pattern, why in PARSE_ONLY.items() if re.search(pattern, command)), None)


def test_readme_has_its_commands():
    names = {c.split()[0] for c in COMMANDS if c}
    assert len(COMMANDS) >= 30 and {"predict", "evaluate", "train", "crop", "serve", "adapt"} <= names


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    """The real parser accepts each command as written (argparse exits 2 on a bad flag or value)."""
    args = build_parser().parse_args(shlex.split(command))
    assert callable(args.func)


def _image(path: Path, source: Path, size: tuple[int, int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as im:
        im = im.convert("RGB")
        (im.resize(size) if size else im).save(path)


def _workspace(root: Path, osie_root: Path) -> None:
    """The README's inputs, small, at the README's paths under ``root`` (the working folder)."""
    import fastsal
    from fastsal.data import load_dataset
    from fastsal.models.registry import build, save_checkpoint

    pics = CALIBRATION[:4]
    for folder in ("photos", "my_photos", "MIT300"):
        for i, src in enumerate(pics[:2]):
            _image(root / folder / f"{folder.lower()}{i}.jpg", src)
    _image(root / "CAT2000/testSet/Stimuli/Action/001.jpg", pics[2])
    _image(root / "CAT2000/testSet/Stimuli/Art/001.jpg", pics[3], (192, 256))  # a portrait
    _image(root / "photo.jpg", pics[0])
    _image(root / "a.jpg", pics[1])
    _image(root / "b.png", pics[2], (300, 200))
    for name in ("million.txt", "all.txt"):
        (root / name).write_text("photos/photos0.jpg\nphotos/photos1.jpg\n")
    for teacher in ("t", "t1", "t2"):  # teachers the README trains elsewhere: a shipped model as one
        save_checkpoint(build("fastsal_a", pretrained=True), "fastsal_a", root / "runs" / teacher / "best.pt")
    # another model's maps of the test images `evaluate --limit 2` scores
    first = [s.image_path for s in load_dataset("osie", osie_root, "test")[:2]]
    predictor = fastsal.load(backend="torch", threads=1)
    for path in first:
        (root / "other_model_maps").mkdir(exist_ok=True)
        np.save(root / "other_model_maps" / (Path(path).stem + ".npy"), predictor.predict(path))
    try:
        import cv2
    except ImportError:
        return
    writer = cv2.VideoWriter(str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()


def test_readme_commands_run(tmp_path, osie_root, mit1003_root, monkeypatch, capsys):
    """Each command that needs no camera, GPU, server or int8 calibration runs (its fast variant),
    in README order, with exit status 0; all failures are reported together."""
    os.symlink(SHARED, tmp_path / "shared")
    work = tmp_path / "work"  # README paths say ../shared: the working folder sits beside it
    work.mkdir()
    _workspace(work, osie_root)
    monkeypatch.chdir(work)
    ran, failed = [], []
    for command in COMMANDS:
        if parse_only_reason(command) or (command.startswith("predict clip.mp4") and not (work / "clip.mp4").exists()):
            continue
        argv = shlex.split(fast_variant(command))
        for shared_out in ("saliency", "maps", "crops"):  # several commands write there with other settings,
            shutil.rmtree(work / shared_out, ignore_errors=True)  # which a rerun refuses (as it should)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse, after fast_variant's options
            code = exc.code
        ran.append(command)
        if code != 0:
            failed.append(f"fastsal {shlex.join(argv)} -> {code}: {capsys.readouterr().err.strip()[-300:]}")
    assert not failed, "\n".join(failed)
    assert len(ran) >= 25
    assert (work / "submission" / "log_densities" / "mit3000.npy").is_file()
    shutil.rmtree(work / "runs", ignore_errors=True)


def test_parse_only_commands_are_few_and_said_why():
    """Everything else runs: a new README command is run unless a pattern here says why not."""
    skipped = [c for c in COMMANDS if parse_only_reason(c)]
    # 9 single-machine commands (camera, cuda, int8 calibration, serve) + 4 that need a Ray cluster (`--ray auto`)
    assert 0 < len(skipped) <= 13, skipped


def test_train_without_backbone_weights_names_the_flag(tmp_path, osie_root, capsys):
    """A MobileNetV2 student with the default --backbone-weights (imagenet): the CLI's one-line error
    names the flag to pass, not the library's keyword."""
    code = main(["train", "--model", "fastsal_a", "--root", str(osie_root), "--limit", "2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--backbone-weights PATH" in err and "backbone_weights=" not in err


def test_library_error_names_the_parameter():
    from fastsal.models.registry import ModelError, build

    with pytest.raises(ModelError, match=r"backbone_weights=PATH"):
        build("fastsal_a", backbone_weights="imagenet")
