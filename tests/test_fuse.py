"""Exact inference rewrites: BatchNorm folding and the fused FastSal-C decoder give the same logits."""
import pytest
import torch
from helpers import randomise
from torch import nn

from fastsal.models import build
from fastsal.models.decoders import DecoderA, DecoderC
from fastsal.models.fuse import (
    FusedDecoderC,
    fold_batchnorm,
    fuse,
    fuse_decoder_c,
    head_as_phase_conv,
)

TOL = 1e-4


def random_feats(size, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    h, w = size[0] // 2, size[1] // 2
    chans = (28, 24, 136, 520)
    return tuple(torch.randn(batch, c, h // 2 ** i, w // 2 ** i, generator=gen) for i, c in enumerate(chans))


def test_head_after_pixel_shuffle_equals_phase_conv_before_it():
    torch.manual_seed(0)
    head = nn.Conv2d(352, 1, 3, padding=1)
    x = torch.randn(2, 4 * 352, 12, 17)
    k, b = head_as_phase_conv(head)
    with torch.no_grad():
        ref = head(nn.functional.pixel_shuffle(x, 2))
        out = nn.functional.pixel_shuffle(nn.functional.conv2d(x, k, b, padding=1), 2)
    assert (out - ref).abs().max().item() < TOL


@pytest.mark.parametrize("size", [(192, 256), (64, 96)])
def test_fused_decoder_c_is_exact(size):
    torch.manual_seed(0)
    dec = DecoderC((28, 24, 136, 520))
    randomise(dec)
    fused = fuse_decoder_c(dec).eval()
    assert isinstance(fused, FusedDecoderC)
    feats = random_feats(size)
    with torch.no_grad():
        ref, out = dec(feats), fused(feats)
    assert out.shape == ref.shape == (2, 1, *size)
    assert ref.std() > 0.1  # not a vacuous comparison
    assert (out - ref).abs().max().item() < TOL


def test_fuse_decoder_c_rejects_other_decoders():
    with pytest.raises(TypeError):
        fuse_decoder_c(DecoderA((28, 24, 136, 520)))


@pytest.mark.parametrize("name", ["fastsal_c", "fastsal_a", "fastsal_bare", "fastsal_a_effnet_lite0"])
def test_fused_model_matches_original(name):
    torch.manual_seed(0)
    model = randomise(build(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert isinstance(fused.decoder, FusedDecoderC) == (name == "fastsal_c")
    size = (192, 256) if name == "fastsal_c" else (64, 96)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref, out = model(x), fused(x)
    assert (out - ref).abs().max().item() < TOL
    # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_fold_batchnorm_in_place_keeps_conv_keys():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    randomise_bn = seq[1]
    with torch.no_grad():
        randomise_bn.running_mean.uniform_(-1, 1)
        randomise_bn.running_var.uniform_(0.5, 2)
    seq.eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        ref = seq(x)
        fold_batchnorm(seq)
        out = seq(x)
    assert isinstance(seq[1], nn.Identity) and seq[0].bias is not None
    assert (out - ref).abs().max().item() < 1e-5
