"""MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's module layout and state_dict keys.

Keeping torchvision's keys (``features.0.0.weight`` … ``classifier.1.bias``) lets a user load a
torchvision ImageNet checkpoint with ``strict=True`` without torchvision installed.

No float ImageNet checkpoint can be downloaded where fastsal is developed, so :func:`from_tflite`
converts Google's quantised TFLite MobileNetV2 (Apache-2.0) to the same keys. That model was
trained in TensorFlow and keeps its conventions: inputs in [-1, 1] (:data:`TF_MEAN`,
:data:`TF_STD`) and "SAME" padding (``MobileNetV2(tf_padding=True)``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from fastsal.errors import FastSalError
from fastsal.models.layers import ConvBNReLU, InvertedResidual, make_divisible

# TF-slim's MobileNetV2 preprocessing, x = 2u - 1 for u in [0, 1]: what the TFLite weights expect.
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)

# t (expansion), c (channels), n (repeats), s (first stride)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """``features`` (indices 0–18) and a ``classifier`` (dropout + linear), as torchvision.

    ``feature_strides[i]`` is the output stride of ``features[i]``; the FastSal encoder groups its
    taps by it. ``tf_padding`` pads the five stride-2 convolutions as TF "SAME" does (on even
    sizes 0 before and 1 after) instead of torchvision's 1 on each side: TF-trained weights (the
    TFLite file) compute what they computed in TF only with it. The padding is static, TF's for
    even sizes at every strided layer: inputs that are multiples of 32, as FastSal always feeds
    (TF would pad an odd size 1 / 1). Padding has no parameters, so the state_dict keys are
    torchvision's either way.
    """

    def __init__(
        self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2, *, tf_padding: bool = False,
    ) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU(3, in_ch, stride=2, same_pad=tf_padding)]
        strides = [2]
        stride = 2
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, same_pad=tf_padding))
                stride *= s if i == 0 else 1
                strides.append(stride)
                in_ch = out_ch
        layers.append(ConvBNReLU(in_ch, last, kernel_size=1))
        strides.append(stride)
        self.features = nn.Sequential(*layers)
        self.feature_strides = tuple(strides)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation, so training from scratch starts where theirs does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def mobilenet_v2(
    weights: str | Path | None = None, *, width_mult: float = 1.0, num_classes: int = 1000, tf_padding: bool = False,
) -> MobileNetV2:
    """Build MobileNetV2; ``weights`` is a local torchvision-layout checkpoint or a TFLite
    MobileNetV2 file (:func:`from_tflite`; pair it with ``tf_padding=True``), never downloaded."""
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult, tf_padding=tf_padding)
    if weights is not None:
        if is_tflite(weights):
            state = from_tflite(weights)
        else:
            state = torch.load(Path(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


def is_tflite(path: str | Path) -> bool:
    """Whether ``path`` is a TFLite flatbuffer: its identifier ``TFL3`` decides, not its name."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8)[4:] == b"TFL3"
    except OSError:
        return False


class TFLiteError(FastSalError, ValueError):
    """A ``.tflite`` file that is not a convertible MobileNetV2, or the ``tflite`` parser missing."""


# TFLite op codes and enums (schema.fbs), written out so the module needs no ``tflite`` at import.
_CONV_2D, _DEPTHWISE_CONV_2D, _ADD = 3, 4, 0
_SAME = 0
_ACT_NONE, _ACT_RELU6 = 0, 3
_DTYPES = {0: np.float32, 2: np.int32, 3: np.uint8, 9: np.int8}  # FLOAT32, INT32, UINT8, INT8


def from_tflite(path: str | Path) -> dict[str, Tensor]:
    """A torchvision-layout MobileNetV2 1.0 state_dict from a TFLite MobileNetV2 classifier.

    Made for Google's ``mobilenet_v2_1.0_224_quant.tflite`` (uint8, per-tensor scales); int8
    per-channel and float32 files of the same graph convert too. Reading the file needs the
    pure-Python flatbuffer parser ``tflite`` (``pip install 'fastsal[train]'``); nothing is downloaded.

    What the conversion does, and why:

    - Dequantisation: a stored integer ``q`` means ``scale * (q - zero_point)``, with one scale and
      zero point per output channel when the file has several (``quantized_dimension``). Biases are
      int32 with zero point 0 and scale ``input_scale * weight_scale``: the file stores that
      product (Google's file: equal to float32 rounding), used as stored, and computed from the
      input and weight scales when a file leaves it out.
    - Layouts: TFLite convolution weights are ``(O, kH, kW, I)`` and depthwise weights
      ``(1, kH, kW, C * multiplier)``; torch wants ``(O, I, kH, kW)`` and ``(C, 1, kH, kW)``.
      Only multiplier 1 exists in MobileNetV2 (the depthwise output has the input's channels), and
      it is checked, as are every layer's shape, stride, fused activation (ReLU6 exactly where
      torchvision has one, none after the linear bottlenecks) and the number of residual adds.
    - Batch norm: TF folded it into the convolution before quantising, ``W' = W * g / sqrt(v + e)``
      and ``b' = beta - m * g / sqrt(v + e)``; the separate ``g, beta, m, v`` are gone for good, and
      any split of ``(W', b')`` back into a convolution and a BN is as exact as any other. We keep
      ``W'`` as the (bias-free) convolution and give the BN ``weight = 1``, ``bias = b'``,
      ``running_mean = 0`` and ``running_var = 1 - eps``, so that in eval mode
      ``BN(y) = (y - 0) / sqrt((1 - eps) + eps) * 1 + b' = y + b'``: the folded layer, exactly
      (``1 - eps + eps`` rounds to 1.0 in float32 for torch's eps = 1e-5). In train mode a BN
      normalises by batch statistics instead, which these running statistics do not describe;
      :func:`fastsal.models.layers.recalibrate_batchnorm` re-splits the layers on real images
      before fine-tuning (``fastsal train`` does it).
    - Classifier: the 1x1 logits convolution has 1001 outputs, class 0 being "background"; rows
      1..1000 are torchvision's 1000 ImageNet classes in the same order (``imagenet_labels.txt``
      minus its first line). ``classifier.1`` gets those rows. Dropping a class changes the softmax
      normaliser, never the ranking of the other classes.

    Two conventions of the TF model are not weights, and the caller must match them:

    - Input: the uint8 input has scale 1/128 and zero point 128, i.e. ``x = (p - 128) / 128`` for
      pixel ``p``: the TF-slim training convention ``x = 2 * u - 1`` on ``u`` in [0, 1], so
      mean = std = 0.5 (exactly 128/255 for the uint8 grid; the 0.4 % difference is below the
      quantisation noise). Not ImageNet mean/std.
    - Padding: TF "SAME" pads stride-2 convolutions on even inputs by 0 top/left and 1
      bottom/right; torchvision pads 1 on all sides, which samples a grid shifted by one input
      pixel at each of the five strided layers. ``MobileNetV2(tf_padding=True)`` reproduces TF.
      Without it, the logits on the shared test photos move by up to 3 (with it, 0.3: int8 noise)
      and the top-5 changes.
    """
    try:
        import tflite
    except ImportError:
        raise TFLiteError(f"{path}: reading a .tflite file needs the 'tflite' package; pip install 'fastsal[train]'") from None
    path = Path(path)
    if not path.is_file():
        raise TFLiteError(f"{path}: no such file; pass an existing .tflite file")
    if not is_tflite(path):
        raise TFLiteError(f"{path}: not a TFLite model (no 'TFL3' identifier); pass a .tflite file")
    buf = path.read_bytes()
    fix = "pass Google's mobilenet_v2_1.0_224 (quant) .tflite classifier"
    try:
        return _convert(tflite, tflite.Model.GetRootAsModel(buf, 0))
    except TFLiteError as exc:
        raise TFLiteError(f"{path}: {exc}; {fix}") from None
    except Exception as exc:  # a damaged flatbuffer fails anywhere inside the generated parser
        raise TFLiteError(f"{path}: unreadable TFLite file ({type(exc).__name__}); {fix}") from None


def _convert(tflite: Any, model: Any) -> dict[str, Tensor]:
    """The work of :func:`from_tflite` on a parsed flatbuffer; errors say what differs, not the fix."""
    graph = model.Subgraphs(0)
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    codes = []
    for op in ops:
        code = model.OperatorCodes(op.OpcodeIndex())
        # Files older than schema 3a set only the int8 deprecated field (the new one then reads 0, ADD).
        codes.append(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
    convs = [(op, c) for op, c in zip(ops, codes) if c in (_CONV_2D, _DEPTHWISE_CONV_2D)]
    ref = MobileNetV2()
    layers = _conv_bn_layers(ref)
    if len(convs) != len(layers) + 1:
        raise TFLiteError(f"{len(convs)} convolutions, not MobileNetV2 1.0's {len(layers) + 1}")
    n_adds, n_res = codes.count(_ADD), sum(getattr(m, "use_res_connect", False) for m in ref.features)
    if n_adds != n_res:
        raise TFLiteError(f"{n_adds} residual adds, not MobileNetV2's {n_res}")

    state: dict[str, Tensor] = {}
    for (op, code), (conv_key, bn_key, relu6) in zip(convs, layers):
        # get_submodule is typed Module; _conv_bn_layers names a Conv2d and its BatchNorm2d
        conv = cast(nn.Conv2d, ref.get_submodule(conv_key))
        bn = cast(nn.BatchNorm2d, ref.get_submodule(bn_key))
        depthwise = code == _DEPTHWISE_CONV_2D
        if depthwise != (conv.groups > 1):
            raise TFLiteError(f"layer {conv_key}: {'a' if depthwise else 'no'} depthwise convolution where MobileNetV2 "
                              f"has {'none' if depthwise else 'one'}")
        weight, bias = _conv_weight_bias(model, graph, op, depthwise=depthwise)
        stride, padding, act, multiplier = _conv_options(tflite, op, code)
        if tuple(weight.shape) != tuple(conv.weight.shape) or bias.shape != (conv.out_channels,) or multiplier != 1:
            raise TFLiteError(f"layer {conv_key}: weights {tuple(weight.shape)} (depth multiplier {multiplier}), "
                              f"not {tuple(conv.weight.shape)}")
        if stride != conv.stride or (padding != _SAME and conv.kernel_size != (1, 1)):
            raise TFLiteError(f"layer {conv_key}: stride {stride}, padding {'SAME' if padding == _SAME else 'VALID'}; "
                              f"MobileNetV2 has stride {conv.stride}, SAME")
        if act != (_ACT_RELU6 if relu6 else _ACT_NONE):
            raise TFLiteError(f"layer {conv_key}: fused activation {act}, not {'RELU6' if relu6 else 'none'}")
        state[f"{conv_key}.weight"] = torch.from_numpy(weight)
        state[f"{bn_key}.weight"] = torch.ones(bn.num_features)
        state[f"{bn_key}.bias"] = torch.from_numpy(bias)
        state[f"{bn_key}.running_mean"] = torch.zeros(bn.num_features)
        state[f"{bn_key}.running_var"] = torch.full((bn.num_features,), 1.0 - bn.eps)
        state[f"{bn_key}.num_batches_tracked"] = torch.tensor(0)

    weight, bias = _conv_weight_bias(model, graph, convs[-1][0], depthwise=False)
    fc = ref.classifier[1]
    if weight.shape[1:] != (fc.in_features, 1, 1) or weight.shape[0] not in (1000, 1001):
        raise TFLiteError(f"classifier weights {tuple(weight.shape)}, not 1001 (or 1000) x {fc.in_features} x 1 x 1")
    drop = weight.shape[0] - 1000  # the background class comes first
    state["classifier.1.weight"] = torch.from_numpy(np.ascontiguousarray(weight[drop:, :, 0, 0]))
    state["classifier.1.bias"] = torch.from_numpy(np.ascontiguousarray(bias[drop:]))
    return {k: state[k] for k in ref.state_dict()}  # torchvision's key order


def _conv_bn_layers(model: MobileNetV2) -> list[tuple[str, str, bool]]:
    """(conv key, its BN's key, followed by ReLU6) for every convolution of ``features``, in
    forward order: the order in which the TF graph, and so the TFLite file, lists them."""
    out = []
    for i, block in enumerate(model.features):
        if isinstance(block, ConvBNReLU):
            out.append((f"features.{i}.0", f"features.{i}.1", True))
            continue
        for j, module in enumerate(cast(InvertedResidual, block).conv):  # features holds only these two kinds
            if isinstance(module, ConvBNReLU):  # 1x1 expansion, 3x3 depthwise
                out.append((f"features.{i}.conv.{j}.0", f"features.{i}.conv.{j}.1", True))
            elif isinstance(module, nn.Conv2d):  # the linear bottleneck and its BN
                out.append((f"features.{i}.conv.{j}", f"features.{i}.conv.{j + 1}", False))
    return out


def _tensor(model: Any, graph: Any, index: int) -> tuple[np.ndarray, Any]:
    """The constant tensor ``index`` as stored (integers for quantised files) and its quantisation."""
    t = graph.Tensors(index)
    dtype = _DTYPES.get(t.Type())
    if dtype is None:
        raise TFLiteError(f"tensor {t.Name().decode()!r} has TFLite type {t.Type()}; only float32/int32/uint8/int8 convert")
    raw = model.Buffers(t.Buffer()).DataAsNumpy()
    if not isinstance(raw, np.ndarray):  # an activation, or data kept outside the flatbuffer (files > 2 GB)
        raise TFLiteError(f"tensor {t.Name().decode()!r} holds no constant data")
    return raw.view(dtype).reshape(t.ShapeAsNumpy()), t.Quantization()


def _quant_params(quant: Any) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(scale, zero point, quantised axis) of a tensor, or None when the file gives no scale."""
    if quant is None or quant.ScaleLength() == 0:
        return None
    scale = quant.ScaleAsNumpy().astype(np.float64)
    zero = quant.ZeroPointAsNumpy().astype(np.float64) if quant.ZeroPointLength() else np.zeros_like(scale)
    return scale, zero, quant.QuantizedDimension()


def _dequantize(values: np.ndarray, params: tuple[np.ndarray, np.ndarray, int] | None) -> np.ndarray:
    """``scale * (q - zero_point)``, per tensor or per channel along the quantised axis."""
    if values.dtype == np.float32:
        return values.copy()
    if params is None:
        raise TFLiteError("an integer weight tensor has no quantisation scale")
    scale, zero, axis = params
    if scale.size > 1:  # per channel: broadcast along the quantised axis
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


def _conv_weight_bias(model: Any, graph: Any, op: Any, *, depthwise: bool) -> tuple[np.ndarray, np.ndarray]:
    """Dequantised (weight in torch layout, bias) of a CONV_2D / DEPTHWISE_CONV_2D operator."""
    inputs = op.InputsAsNumpy()
    w_values, w_quant = _tensor(model, graph, int(inputs[1]))
    b_values, b_quant = _tensor(model, graph, int(inputs[2]))
    w_params, b_params = _quant_params(w_quant), _quant_params(b_quant)
    if b_params is None and b_values.dtype == np.int32 and w_params is not None:
        # TFLite's rule for int32 biases, zero point 0: scale = input scale * weight scale (per channel).
        in_params = _quant_params(graph.Tensors(int(inputs[0])).Quantization())
        if in_params is not None:
            scale = in_params[0][0] * w_params[0]
            b_params = (scale, np.zeros_like(scale), 0)
    weight, bias = _dequantize(w_values, w_params), _dequantize(b_values, b_params)
    if depthwise:
        # (1, kH, kW, C * multiplier) -> (C * multiplier, 1, kH, kW); MobileNetV2 uses multiplier 1.
        return np.ascontiguousarray(weight.transpose(3, 0, 1, 2)), bias
    return np.ascontiguousarray(weight.transpose(0, 3, 1, 2)), bias  # (O, kH, kW, I) -> (O, I, kH, kW)


def _conv_options(tflite: Any, op: Any, code: int) -> tuple[tuple[int, int], int, int, int]:
    """(stride, padding, fused activation, depth multiplier) of a convolution operator."""
    table = op.BuiltinOptions()
    if code == _DEPTHWISE_CONV_2D:
        opt = tflite.DepthwiseConv2DOptions()
        opt.Init(table.Bytes, table.Pos)
        multiplier = opt.DepthMultiplier()
    else:
        opt = tflite.Conv2DOptions()
        opt.Init(table.Bytes, table.Pos)
        multiplier = 1
    return (opt.StrideH(), opt.StrideW()), opt.Padding(), opt.FusedActivationFunction(), multiplier
