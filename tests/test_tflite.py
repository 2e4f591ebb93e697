"""MobileNetV2 from Google's TFLite file: the conversion maths on synthetic files written here, the
real file's keys, its top-5 against the TFLite runtime, and its use as the training init.

The synthetic tests need only the ``tflite`` parser; the real file comes from ../shared (skipped
when absent) and the top-5 comparison also needs a TFLite runtime (``ai-edge-litert`` or
``tflite-runtime``).
"""
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastsal.cli import main
from fastsal.models import build, load_model
from fastsal.models.layers import ConvBNReLU, recalibrate_batchnorm
from fastsal.models.mobilenetv2 import TF_MEAN, TF_STD, MobileNetV2, TFLiteError, from_tflite, mobilenet_v2
from fastsal.training import TrainConfig, train

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
CORAL = SHARED / "weights" / "coral-mobilenet-v2"
TFLITE_FILE = CORAL / "mobilenet_v2_1.0_224_quant.tflite"
KEYS_FILE = Path(__file__).parent / "data" / "torchvision_mobilenet_v2_keys.txt"

# TFLite schema enums the synthetic writer needs (schema.fbs).
ADD, CONV_2D, DEPTHWISE_CONV_2D = 0, 3, 4
FLOAT32, INT32, INT8 = 0, 2, 9
NONE, RELU6 = 0, 3
CONV_OPTIONS, DEPTHWISE_OPTIONS = 1, 2  # BuiltinOptions union members


@pytest.fixture(scope="module")
def coral() -> Path:
    pytest.importorskip("tflite", reason="the 'tflite' parser is not installed (pip install 'fastsal[test]')")
    if not TFLITE_FILE.is_file():
        pytest.skip("../shared/weights/coral-mobilenet-v2 not present")
    return TFLITE_FILE


@pytest.fixture(scope="module")
def converted(coral) -> dict[str, torch.Tensor]:
    return from_tflite(coral)


# ---- synthetic files: the maths -------------------------------------------------------------------

def _conv_bn_pairs(model: MobileNetV2) -> list[tuple[nn.Conv2d, nn.BatchNorm2d, bool]]:
    """(conv, BN, ReLU6 after it) in forward order, walked independently of the converter."""
    out = []
    for block in model.features:
        if isinstance(block, ConvBNReLU):
            out.append((block[0], block[1], True))
            continue
        mods = list(block.conv)
        for j, m in enumerate(mods):
            if isinstance(m, ConvBNReLU):
                out.append((m[0], m[1], True))
            elif isinstance(m, nn.Conv2d):
                out.append((m, mods[j + 1], False))
    return out


def _random_source(seed: int = 0) -> MobileNetV2:
    """A float MobileNetV2 with non-trivial BN statistics: what TF had before folding."""
    gen = torch.Generator().manual_seed(seed)
    model = MobileNetV2()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
        model.classifier[1].weight.normal_(0, 0.1, generator=gen)
        model.classifier[1].bias.normal_(0, 0.1, generator=gen)
    return model.eval()


def _folded_layers(model: MobileNetV2) -> list[dict]:
    """TF's folding, ``W' = W g / sqrt(v + e)``, ``b' = beta - m g / sqrt(v + e)``, in TFLite layout."""
    layers = []
    for conv, bn, relu6 in _conv_bn_pairs(model):
        k = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
        w = conv.weight.detach() * k.view(-1, 1, 1, 1)
        b = bn.bias.detach() - bn.running_mean * k
        dw = conv.groups > 1
        layers.append({"op": DEPTHWISE_CONV_2D if dw else CONV_2D, "stride": conv.stride[0],
                       "act": RELU6 if relu6 else NONE,
                       "w": (w.permute(1, 2, 3, 0) if dw else w.permute(0, 2, 3, 1)).numpy().copy(),
                       "b": b.numpy().copy()})
    fc = model.classifier[1]
    background = np.full((1, fc.in_features), 0.5, np.float32)  # class 0, dropped by the conversion
    layers.append({"op": CONV_2D, "stride": 1, "act": NONE,
                   "w": np.concatenate([background, fc.weight.detach().numpy()])[:, None, None, :].copy(),
                   "b": np.concatenate([[9.0], fc.bias.detach().numpy()]).astype(np.float32)})
    return layers


def _quantise_int8(layer: dict, input_scale: float = 1 / 128) -> dict:
    """Per-channel symmetric int8 weights (TFLite's axis: 0 for convs, 3 for depthwise) and int32
    biases with scale input_scale * weight_scale, as a TFLite converter writes them."""
    w, axis = layer["w"], 3 if layer["op"] == DEPTHWISE_CONV_2D else 0
    reduce = tuple(i for i in range(4) if i != axis)
    scale = np.maximum(np.abs(w).max(axis=reduce), 1e-8) / 127
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    bias_scale = input_scale * scale
    qb = np.round(layer["b"] / bias_scale).astype(np.int32)
    return {**layer, "w": q, "b": qb, "w_quant": (scale, axis), "b_quant": (bias_scale, 0)}


def _write_tflite(path: Path, layers: list[dict], n_adds: int = 10, input_scale: float | None = None) -> Path:
    """A minimal TFLite flatbuffer holding what the converter reads: the convolutions with their
    constant weights and options, and ``n_adds`` ADD operators (activations are one dummy tensor,
    quantised with ``input_scale`` when given)."""
    import flatbuffers
    import tflite as T

    b = flatbuffers.Builder(1 << 20)

    def vector(start, offsets):
        start(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    # Buffers: 0 is the empty buffer of the dummy activation tensor; then weight, bias per layer.
    arrays = [a for layer in layers for a in (layer["w"], layer["b"])]
    buffers = []
    for data in [None, *arrays]:
        vec = b.CreateByteVector(np.ascontiguousarray(data).tobytes()) if data is not None else None
        T.BufferStart(b)
        if vec is not None:
            T.BufferAddData(b, vec)
        buffers.append(T.BufferEnd(b))

    def tensor(name: str, array, buffer: int, quant) -> int:
        name_off = b.CreateString(name)
        shape = b.CreateNumpyVector(np.asarray(array.shape if array is not None else (1,), np.int32))
        q_off = None
        if quant is not None:
            scale, axis = quant
            scale_off = b.CreateNumpyVector(np.asarray(scale, np.float32).reshape(-1))
            zero_off = b.CreateNumpyVector(np.zeros(np.size(scale), np.int64))
            T.QuantizationParametersStart(b)
            T.QuantizationParametersAddScale(b, scale_off)
            T.QuantizationParametersAddZeroPoint(b, zero_off)
            T.QuantizationParametersAddQuantizedDimension(b, axis)
            q_off = T.QuantizationParametersEnd(b)
        kind = {np.dtype(np.float32): FLOAT32, np.dtype(np.int32): INT32, np.dtype(np.int8): INT8}
        T.TensorStart(b)
        T.TensorAddName(b, name_off)
        T.TensorAddShape(b, shape)
        T.TensorAddType(b, kind[array.dtype] if array is not None else FLOAT32)
        T.TensorAddBuffer(b, buffer)
        if q_off is not None:
            T.TensorAddQuantization(b, q_off)
        return T.TensorEnd(b)

    tensors = [tensor("act", None, 0, None if input_scale is None else (np.array([input_scale]), 0))]
    for i, layer in enumerate(layers):
        tensors.append(tensor(f"w{i}", layer["w"], 1 + 2 * i, layer.get("w_quant")))
        tensors.append(tensor(f"b{i}", layer["b"], 2 + 2 * i, layer.get("b_quant")))

    code_index = {CONV_2D: 0, DEPTHWISE_CONV_2D: 1, ADD: 2}
    operators = []
    for i, layer in enumerate(layers):
        inputs = b.CreateNumpyVector(np.array([0, 1 + 2 * i, 2 + 2 * i], np.int32))
        outputs = b.CreateNumpyVector(np.array([0], np.int32))
        if layer["op"] == DEPTHWISE_CONV_2D:
            T.DepthwiseConv2DOptionsStart(b)
            T.DepthwiseConv2DOptionsAddPadding(b, 0)
            T.DepthwiseConv2DOptionsAddStrideH(b, layer["stride"])
            T.DepthwiseConv2DOptionsAddStrideW(b, layer["stride"])
            T.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
            T.DepthwiseConv2DOptionsAddFusedActivationFunction(b, layer["act"])
            options, kind = T.DepthwiseConv2DOptionsEnd(b), DEPTHWISE_OPTIONS
        else:
            T.Conv2DOptionsStart(b)
            T.Conv2DOptionsAddPadding(b, 0)
            T.Conv2DOptionsAddStrideH(b, layer["stride"])
            T.Conv2DOptionsAddStrideW(b, layer["stride"])
            T.Conv2DOptionsAddFusedActivationFunction(b, layer["act"])
            options, kind = T.Conv2DOptionsEnd(b), CONV_OPTIONS
        T.OperatorStart(b)
        T.OperatorAddOpcodeIndex(b, code_index[layer["op"]])
        T.OperatorAddInputs(b, inputs)
        T.OperatorAddOutputs(b, outputs)
        T.OperatorAddBuiltinOptionsType(b, kind)
        T.OperatorAddBuiltinOptions(b, options)
        operators.append(T.OperatorEnd(b))
    for _ in range(n_adds):
        inputs = b.CreateNumpyVector(np.array([0, 0], np.int32))
        outputs = b.CreateNumpyVector(np.array([0], np.int32))
        T.OperatorStart(b)
        T.OperatorAddOpcodeIndex(b, code_index[ADD])
        T.OperatorAddInputs(b, inputs)
        T.OperatorAddOutputs(b, outputs)
        operators.append(T.OperatorEnd(b))

    tensors_vec = vector(T.SubGraphStartTensorsVector, tensors)
    operators_vec = vector(T.SubGraphStartOperatorsVector, operators)
    io = b.CreateNumpyVector(np.array([0], np.int32))
    T.SubGraphStart(b)
    T.SubGraphAddTensors(b, tensors_vec)
    T.SubGraphAddOperators(b, operators_vec)
    T.SubGraphAddInputs(b, io)
    T.SubGraphAddOutputs(b, io)
    subgraph = T.SubGraphEnd(b)
    codes = []
    for code in (CONV_2D, DEPTHWISE_CONV_2D, ADD):
        T.OperatorCodeStart(b)
        T.OperatorCodeAddBuiltinCode(b, code)
        T.OperatorCodeAddDeprecatedBuiltinCode(b, code)
        T.OperatorCodeAddVersion(b, 1)
        codes.append(T.OperatorCodeEnd(b))
    codes_vec = vector(T.ModelStartOperatorCodesVector, codes)
    subgraphs_vec = vector(T.ModelStartSubgraphsVector, [subgraph])
    buffers_vec = vector(T.ModelStartBuffersVector, buffers)
    T.ModelStart(b)
    T.ModelAddVersion(b, 3)
    T.ModelAddOperatorCodes(b, codes_vec)
    T.ModelAddSubgraphs(b, subgraphs_vec)
    T.ModelAddBuffers(b, buffers_vec)
    b.Finish(T.ModelEnd(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


@pytest.fixture(scope="module")
def tflite_parser():
    return pytest.importorskip("tflite", reason="the 'tflite' parser is not installed (pip install 'fastsal[test]')")


def test_float_file_unfolds_batchnorm_exactly(tflite_parser, tmp_path):
    """A float32 file made by folding a MobileNetV2 with random BN statistics converts back to a
    network computing the same function: the BN split, the layouts (depthwise included) and the
    1001 -> 1000 classifier are exact."""
    source = _random_source()
    state = from_tflite(_write_tflite(tmp_path / "float.tflite", _folded_layers(source)))
    assert list(state) == list(source.state_dict())
    model = MobileNetV2()
    model.load_state_dict(state, strict=True)
    model.eval()
    for key, value in state.items():
        if key.endswith(".running_var") and not key.startswith("classifier"):
            assert torch.equal(value, torch.full_like(value, 1 - 1e-5)), key
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = source.features(x), model.features(x)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
        assert torch.equal(model.classifier[1].weight, source.classifier[1].weight)
        assert torch.equal(model.classifier[1].bias, source.classifier[1].bias)


@pytest.mark.parametrize("bias_scale_stored", [True, False])
def test_int8_per_channel_file_dequantises_per_channel(tflite_parser, tmp_path, bias_scale_stored):
    """Per-channel int8 weights along TFLite's axis (0, or 3 for depthwise) and int32 biases with
    scale input_scale * weight_scale (stored, or computed when the file leaves it out) dequantise
    to within half a step of the float values."""
    floats = _folded_layers(_random_source(seed=2))
    layers = [_quantise_int8(layer, input_scale=1 / 128) for layer in floats]
    written = layers if bias_scale_stored else [{**layer, "b_quant": None} for layer in layers]
    state = from_tflite(_write_tflite(tmp_path / "int8.tflite", written, input_scale=1 / 128))
    model = MobileNetV2()
    model.load_state_dict(state, strict=True)
    for (conv, bn, _), layer, ref in zip(_conv_bn_pairs(model), layers, floats):
        scale, axis = layer["w_quant"]
        dw = layer["op"] == DEPTHWISE_CONV_2D
        w_ref = torch.from_numpy(ref["w"]).permute(3, 0, 1, 2) if dw else torch.from_numpy(ref["w"]).permute(0, 3, 1, 2)
        step = torch.from_numpy(scale.astype(np.float32)).view(-1, 1, 1, 1)
        assert ((conv.weight - w_ref).abs() <= step / 2 * (1 + 1e-4)).all()
        b_step = torch.from_numpy(layer["b_quant"][0].astype(np.float32))
        b_ref = torch.from_numpy(ref["b"])
        assert ((bn.bias - b_ref).abs() <= b_step / 2 + 1e-6 * b_ref.abs()).all()  # + float32 rounding


@pytest.mark.parametrize("case", ["stride", "activation", "adds", "truncated", "not_tflite"])
def test_wrong_files_are_one_line(tflite_parser, tmp_path, case):
    layers = _folded_layers(_random_source())
    path = tmp_path / "m.tflite"
    if case == "stride":
        layers[4]["stride"] = 1  # features.2's depthwise conv has stride 2
    elif case == "activation":
        layers[2]["act"] = RELU6  # features.1's projection is linear
    if case == "not_tflite":
        path.write_bytes(b"\x00" * 64)
    else:
        _write_tflite(path, layers, n_adds=9 if case == "adds" else 10)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:4096])
    expected = {
        "stride": r"layer features\.2\.conv\.1\.0: stride \(1, 1\), padding SAME; MobileNetV2 has stride \(2, 2\)",
        "activation": r"layer features\.1\.conv\.1: fused activation 3, not none",
        "adds": r"9 residual adds, not MobileNetV2's 10",
        "truncated": r"unreadable TFLite file \(\w+\)",
        "not_tflite": r"not a TFLite model \(no 'TFL3' identifier\); pass a \.tflite file",
    }[case]
    with pytest.raises(TFLiteError) as info:
        from_tflite(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and re.search(expected, message), message


def test_missing_parser_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tflite", None)  # `import tflite` now raises ImportError
    with pytest.raises(TFLiteError, match=r"needs the 'tflite' package; pip install 'fastsal\[train\]'$"):
        from_tflite(tmp_path / "m.tflite")


def test_recalibrate_batchnorm_keeps_eval_and_matches_train_mode():
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                          nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.normal_(0, 1, generator=gen)
            bn.running_var.uniform_(0.1, 3, generator=gen)
            bn.weight.uniform_(0.5, 2, generator=gen)
            bn.bias.normal_(0, 1, generator=gen)
    model.eval()
    x = torch.randn(6, 3, 10, 12, generator=gen) * 2 + 0.5
    with torch.no_grad():
        before = model(x)
        y = model[0](x)
    assert recalibrate_batchnorm(model, [x[:2], x[2:]]) == 2
    assert not model.training
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-5)
        assert torch.allclose(model[1].running_mean, y.mean((0, 2, 3)), atol=1e-5)
        assert torch.allclose(model[1].running_var, y.var((0, 2, 3), unbiased=False), rtol=1e-4)
        model.train()  # the batch is the calibration data: batch statistics = running statistics
        assert torch.allclose(model(x), before, atol=1e-4)
    # ``within`` limits the change to part of the model
    other = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    assert recalibrate_batchnorm(other, [x], within=other[2:]) == 1
    assert torch.equal(other[1].running_var, torch.ones(4)) and not torch.equal(other[3].running_var, torch.ones(4))


# ---- the real file ---------------------------------------------------------------------------------

def test_real_file_has_torchvision_keys_and_loads_strictly(converted):
    want = {}
    for line in KEYS_FILE.read_text().splitlines():
        key, _, shape = line.partition(" ")
        want[key] = tuple(int(s) for s in shape.split("x")) if shape else ()
    assert {k: tuple(v.shape) for k, v in converted.items()} == want
    assert all(v.dtype == (torch.int64 if k.endswith("num_batches_tracked") else torch.float32)
               for k, v in converted.items())
    model = mobilenet_v2(TFLITE_FILE, tf_padding=True)  # strict load inside
    assert torch.equal(model.state_dict()["features.18.0.weight"], converted["features.18.0.weight"])
    # the uint8 weights dequantise onto their per-tensor grid: 256 levels at most
    assert len(torch.unique(converted["features.0.0.weight"])) <= 256


def _runtime():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            pytest.skip("no TFLite runtime: neither ai-edge-litert nor tflite-runtime imports (pip install 'fastsal[test]')")
    return Interpreter


def _tflite_logits(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The TFLite model's dequantised logits (1001) and uint8 softmax scores (1001)."""
    interpreter = _runtime()(model_path=str(TFLITE_FILE), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    scores = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0].astype(np.int64)
    # the 1x1 logits convolution's output, before reshape and softmax: the one (1, 1, 1, 1001) tensor
    (logits,) = [d for d in interpreter.get_tensor_details() if tuple(d["shape"]) == (1, 1, 1, 1001)]
    scale, zero = logits["quantization"]
    q = interpreter.get_tensor(logits["index"]).reshape(-1).astype(np.int64)
    return (q - zero) * scale, scores


@pytest.mark.filterwarnings("ignore:Warning. Enabling .experimental_preserve_all_tensors.")
@pytest.mark.parametrize("photo, top1", [("bird.bmp", "chickadee"), ("cat.bmp", "Egyptian cat")])
def test_top5_matches_the_tflite_model(converted, photo, top1):
    """The float model (TF padding, mean = std = 0.5) ranks classes as the int8 model does.

    The int8 softmax is too coarse to rank a top-5 (scale 1/256: the bird's 2nd to 4th classes all
    score 1), so the ranking compares the dequantised logits. Classes whose int8 logits lie within
    a few quantisation steps may swap (the bird's 2nd-5th are within 0.5 of each other), so the
    top-1 must be equal and the top-5 equal as sets.
    """
    labels = (CORAL / "imagenet_labels.txt").read_text().splitlines()
    image = np.array(Image.open(CORAL / photo).convert("RGB").resize((224, 224), Image.BILINEAR))
    tfl_logits, tfl_scores = _tflite_logits(image)
    tfl_top5 = [labels[i] for i in np.argsort(-tfl_logits, kind="stable")[:5]]

    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - torch.tensor(TF_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(TF_STD).view(1, 3, 1, 1)
    errors = {}
    for tf_padding in (True, False):
        model = MobileNetV2(tf_padding=tf_padding)
        model.load_state_dict(converted, strict=True)
        with torch.no_grad():
            logits = model.eval()(x)[0].numpy()
        errors[tf_padding] = np.abs(logits - tfl_logits[1:]).max()
        if tf_padding:
            top5 = [labels[i + 1] for i in np.argsort(-logits)[:5]]
            probs = torch.softmax(torch.from_numpy(logits), 0).numpy()
    assert top5[0] == tfl_top5[0] == labels[int(np.argmax(tfl_scores))] == top1
    assert set(top5) == set(tfl_top5), (top5, tfl_top5)
    assert np.abs(probs - tfl_scores[1:] / 256).max() < 0.03
    # TF's asymmetric padding matters: torchvision's symmetric padding is ~10x further off
    assert errors[True] < 0.5 < 2 * errors[True] < errors[False], errors


# ---- the training init -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fastsal_a", "fastsal_bare"])
def test_build_with_tflite_backbone(converted, name):
    model = build(name, backbone_weights=TFLITE_FILE)
    state = model.state_dict()
    for key, value in converted.items():
        if key.startswith("features."):
            assert torch.equal(state[f"encoder.{key}"], value), key
    assert torch.equal(model.mean.flatten(), torch.tensor(TF_MEAN)) and torch.equal(model.std.flatten(), torch.tensor(TF_STD))
    stem = model.encoder.features[0]
    assert stem.pad == (0, 1, 0, 1) and stem[0].padding == (0, 0)  # TF "SAME" on the strided stem


def test_train_from_tflite_backbone(converted, osie_root, tmp_path, capsys):
    """``train`` starts from the converted encoder (lr ~0: the weights barely move) with its
    BN statistics re-estimated on training images, not the identity BNs of the conversion."""
    cfg = TrainConfig.from_flat(model="fastsal_bare", root=str(osie_root), out=str(tmp_path), epochs=1, batch_size=4,
                      input_size=(64, 96), backbone_weights=str(TFLITE_FILE), limit=4, lr=1e-9)
    train(cfg, progress=False)
    assert "batch norms folded into the TFLite file re-estimated on 4 training images" in capsys.readouterr().out
    model, _ = load_model(tmp_path / "best.pt")
    state = model.state_dict()
    for key in ("features.0.0.weight", "features.7.conv.1.0.weight", "features.18.0.weight"):
        assert torch.allclose(state[f"encoder.{key}"], converted[key], atol=1e-6), key
    var = state["encoder.features.0.1.running_var"]
    assert not torch.allclose(var, torch.full_like(var, 1 - 1e-5))


@pytest.mark.parametrize("case", ["effnet", "damaged"])
def test_train_rejects_unusable_tflite_in_one_line(tflite_parser, tmp_path, capsys, monkeypatch, case):
    import fastsal.training.data as data_mod

    monkeypatch.setattr(data_mod, "load_dataset", lambda *a, **k: pytest.fail("data read before the check"))
    path = tmp_path / "m.tflite"
    path.write_bytes(b"\x18\x00\x00\x00TFL3" + b"\x07" * 100)
    model = "fastsal_c_effnet_lite0" if case == "effnet" else "fastsal_a"
    code = main(["train", "--root", str(tmp_path), "--out", str(tmp_path / "run"), "--model", model,
                 "--backbone-weights", str(path), "--limit", "4", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1, err
    expected = {
        "effnet": "a TFLite file converts to MobileNetV2 only, not the effnet_lite0 backbone of "
                  "fastsal_c_effnet_lite0; pass --model fastsal_c",
        "damaged": r"unreadable TFLite file \(\w+\); pass Google's mobilenet_v2_1.0_224 \(quant\) .tflite classifier",
    }[case]
    assert err[0].startswith(f"fastsal: error: --backbone-weights {path}: ") and re.search(expected, err[0]), err
