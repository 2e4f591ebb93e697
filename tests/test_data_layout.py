"""The data package's layering and the one-owner helpers it relies on (issue 21).

Readers import only :mod:`fastsal.data.base` (and the fixation maths), the registry imports the
readers, so there is no ``datasets <-> pseudo`` cycle; the stride rule, the EXIF quarter turn and
the folder walk each have one owner.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fastsal import geometry
from fastsal.images import fit_input_size, is_image_name, oriented_size, walk_images

DATA = Path(__file__).resolve().parents[1] / "src" / "fastsal" / "data"


def _data_imports(path: Path) -> set[str]:
    """The ``fastsal.data.*`` modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastsal.data"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fastsal.data")}
    return found


@pytest.mark.parametrize("path", [*sorted((DATA / "readers").glob("*.py")), DATA / "pseudo.py"], ids=lambda p: p.name)
def test_readers_import_only_the_base(path):
    assert _data_imports(path) <= {"fastsal.data.base", "fastsal.data.fixations"}


def test_base_imports_no_reader_and_pseudo_imports_alone():
    assert _data_imports(DATA / "base.py") == set()
    # imported first, each module loads without a circular-import error, and without torch
    code = ("import sys, fastsal.data.pseudo as p, fastsal.data.readers.folder as f; "
            "assert 'torch' not in sys.modules; print(p.PSEUDO_LAYOUT, f.FOLDER_LAYOUT)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_one_stride_rule():
    assert geometry.STRIDE == 32
    assert [geometry.round_to_stride(v) for v in (0, 15, 17, 48, 49, 100)] == [32, 32, 32, 64, 64, 96]
    assert geometry.network_size((100, 96)) == (96, 96) and geometry.network_size((1, 1)) == (32, 32)
    assert geometry.is_network_size((64, 96)) and not geometry.is_network_size((100, 96))
    assert not geometry.is_network_size((0, 32)) and not geometry.is_network_size((-32, 32))
    assert fit_input_size((600, 800), (190, 260)) == geometry.network_size((190, 260))


def test_model_uses_the_geometry_rule():
    pytest.importorskip("torch")
    from fastsal.models import fastsal as model_module

    assert model_module.network_size is geometry.network_size and model_module.STRIDE == geometry.STRIDE


def test_oriented_size_swaps_for_quarter_turns(tmp_path):
    img = Image.new("RGB", (40, 30))
    exif = img.getexif()
    for orientation, expected in ((1, (30, 40)), (3, (30, 40)), (6, (40, 30)), (8, (40, 30))):
        exif[0x0112] = orientation
        img.save(tmp_path / "a.jpg", exif=exif)
        with Image.open(tmp_path / "a.jpg") as im:
            assert oriented_size(im) == expected, orientation


def test_walk_images_rules(tmp_path):
    for rel in ("a.jpg", "B.PNG", ".hidden.jpg", "notes.txt", "sub/c.webp", ".cache/d.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert is_image_name("x.JPG") and not is_image_name(".x.jpg") and not is_image_name("x.txt")
    rel = lambda paths: sorted(p.relative_to(tmp_path).as_posix() for p in paths)  # noqa: E731
    assert rel(walk_images(tmp_path)) == [".cache/d.jpg", "B.PNG", "a.jpg", "sub/c.webp"]
    assert rel(walk_images(tmp_path, hidden_folders=False)) == ["B.PNG", "a.jpg", "sub/c.webp"]
    assert rel(walk_images(tmp_path, (".png",))) == ["B.PNG"]
