"""Reference saliency models (SalGAN's generator, DeepGaze II) for COST COUNTING ONLY.

These are architectural re-creations with random weights: they let :mod:`fastsal.cost` count
parameters, multiply-accumulates and latency of the teachers FastSal is distilled from and
compared against. They are not trained, load no published weights, and their outputs mean
nothing. Layer configurations follow the papers (and, where the paper is silent, the authors'
public code as best we know it); each class docstring says what was assumed.

At 192 x 256 (measured with :func:`fastsal.cost.cost_table`): SalGAN generator 31,787,009
parameters, 39.95 GMAC; DeepGaze II 20,065,975 parameters (VGG-19 conv1_1..conv5_4 is 20,024,384
of them), 4.78 GMAC (VGG-19 runs on the half-size image; 19.1 GMAC at full size). For comparison
FastSal-A: 3,646,715 parameters, 0.64 GMAC; FastSal-C: 2,574,049, 0.62 GMAC.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# VGG configurations up to (and excluding) pool5: numbers are 3x3 conv widths, "M" a 2x2 max-pool.
VGG16_TO_CONV5_3 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG19_TO_CONV5_4 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                    512, 512, 512, 512)


def _vgg_layers(cfg: tuple, in_ch: int = 3) -> tuple[nn.Sequential, list[str]]:
    """VGG conv stack (conv/ReLU as separate, non-inplace modules) and the caffe-style name of
    each module (conv1_1, relu1_1, ..., pool1, ...)."""
    layers: list[nn.Module] = []
    names: list[str] = []
    block, index = 1, 1
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            layers += [nn.Conv2d(in_ch, int(v), 3, padding=1), nn.ReLU()]
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            in_ch, index = int(v), index + 1
    return nn.Sequential(*layers), names


class SalGANGenerator(nn.Module):
    """SalGAN generator (Pan et al., "SalGAN: Visual Saliency Prediction with Generative
    Adversarial Networks", CVPRW 2017), random weights, for cost counting only.

    Encoder: VGG-16 conv1_1 .. conv5_3 (pool5 and the fully connected layers removed).
    Decoder: the encoder mirrored, max-pooling replaced by x2 nearest-neighbour upsampling:
    3x conv 512 (uconv5_*), up, 3x conv 512, up, 3x conv 256, up, 2x conv 128, up, 2x conv 64,
    all 3x3 + ReLU, then a 1x1 conv to one channel and a sigmoid (the layout of the authors'
    Lasagne generator). Input 192 x 256 in the paper; output at input resolution.
    """

    decoder_cfg = ((512, 512, 512), (512, 512, 512), (256, 256, 256), (128, 128), (64, 64))

    def __init__(self) -> None:
        super().__init__()
        self.encoder, _ = _vgg_layers(VGG16_TO_CONV5_3)
        layers: list[nn.Module] = []
        in_ch = 512
        for i, block in enumerate(self.decoder_cfg):
            if i > 0:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            for width in block:
                layers += [nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU()]
                in_ch = width
        layers += [nn.Conv2d(in_ch, 1, 1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class DeepGazeII(nn.Module):
    """DeepGaze II (Kümmerer, Wallis, Gatys & Bethge, "Understanding Low- and High-Level
    Contributions to Fixation Prediction", ICCV 2017), random weights, for cost counting only.

    - The image is downsampled by ``downsample`` (2, as in the authors' PyTorch release) and fed
      to VGG-19 (conv1_1 .. conv5_4; pool5 and classifier unused, their cost not counted).
    - Features conv5_1, relu5_1, relu5_2, conv5_3, relu5_4 (5 x 512 = 2560 channels, stride 16)
      are concatenated and read out by four 1x1 convolutions with 16, 32, 2 and 1 channels and
      softplus between them.
    - The readout is upsampled (nearest) to ``1/saliency_map_factor`` of the input, blurred with
      a Gaussian (learned sigma, one parameter; separable, truncated at 3 sigma), a weighted
      centre-bias log-density (one parameter) is added, upsampled to the input size and
      normalised with a log-softmax over pixels: the output is a log-density.

    The centre bias is an isotropic Gaussian here (the real model uses one estimated on MIT1003);
    this does not change the cost.
    """

    taps = ("conv5_1", "relu5_1", "relu5_2", "conv5_3", "relu5_4")
    readout_widths = (16, 32, 2, 1)

    def __init__(self, downsample: int = 2, saliency_map_factor: int = 2, sigma: float = 8.0) -> None:
        super().__init__()
        self.downsample = downsample
        self.saliency_map_factor = saliency_map_factor
        self.features, self.feature_names = _vgg_layers(VGG19_TO_CONV5_4)
        layers: list[nn.Module] = []
        in_ch = 512 * len(self.taps)
        for i, width in enumerate(self.readout_widths):
            layers.append(nn.Conv2d(in_ch, width, 1))
            if i < len(self.readout_widths) - 1:
                layers.append(nn.Softplus())
            in_ch = width
        self.readout = nn.Sequential(*layers)
        self.sigma = nn.Parameter(torch.tensor(float(sigma)))
        self.center_bias_weight = nn.Parameter(torch.tensor(1.0))

    def _blur(self, x: Tensor) -> Tensor:
        radius = int(math.ceil(3.0 * float(self.sigma.detach())))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / self.sigma) ** 2)
        k = k / k.sum()
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))

    @staticmethod
    def _center_bias(h: int, w: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        ys = (torch.arange(h, dtype=dtype, device=device) - (h - 1) / 2) / h
        xs = (torch.arange(w, dtype=dtype, device=device) - (w - 1) / 2) / w
        log_p = -0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2) / 0.25 ** 2
        return (log_p - torch.logsumexp(log_p.flatten(), 0)).view(1, 1, h, w)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        y = F.interpolate(x, scale_factor=1 / self.downsample, mode="nearest")
        feats: dict[str, Tensor] = {}
        for name, layer in zip(self.feature_names, self.features):
            y = layer(y)
            if name in self.taps:
                feats[name] = y
            if name == self.taps[-1]:
                break
        size = (math.ceil(h / self.downsample / 16), math.ceil(w / self.downsample / 16))
        z = torch.cat([F.interpolate(feats[t], size=size, mode="nearest") for t in self.taps], dim=1)
        z = self.readout(z)
        sh, sw = h // self.saliency_map_factor, w // self.saliency_map_factor
        z = self._blur(F.interpolate(z, size=(sh, sw), mode="nearest"))
        z = z + self.center_bias_weight * self._center_bias(sh, sw, z.dtype, z.device)
        z = F.interpolate(z, size=(h, w), mode="nearest")
        return z - torch.logsumexp(z.flatten(1), dim=1).view(n, 1, 1, 1)


REFERENCES: dict[str, type[nn.Module]] = {"salgan": SalGANGenerator, "deepgaze2": DeepGazeII}


def build_reference(name: str) -> nn.Module:
    """A reference model by name (``salgan``, ``deepgaze2``), random weights, eval mode."""
    if name not in REFERENCES:
        raise ValueError(f"unknown reference model {name!r}; choose one of: {', '.join(REFERENCES)}")
    return REFERENCES[name]().eval()
