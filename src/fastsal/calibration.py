"""A fitted calibration of a model's density (temperature and centre-bias prior) and how it is applied.

The low half of :mod:`fastsal.calibrate` (which fits one and is ``fastsal calibrate``): what a
checkpoint's ``meta["calibration"]`` holds (:class:`Calibration`, checked by :func:`from_meta`) and
:func:`apply`, the step :meth:`fastsal.predict.Predictor.small_log_density` runs after the blur. It
imports nothing of fastsal's but the errors, so the predictor below the fit can use it without an
import cycle (the fit itself loads predictors).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from fastsal.errors import FastSalError

FORMS = ("power", "mixture")
# Bounds of the fit (and of a valid calibration): a temperature outside them, a prior narrower than
# 2 % of the side or a weight beyond them is a damaged file, not a calibration.
TEMPERATURE_RANGE = (0.2, 5.0)
POWER_WEIGHT_RANGE = (0.0, 4.0)
MIXTURE_WEIGHT_RANGE = (0.0, 0.95)
PRIOR_CENTRE_RANGE = (0.1, 0.9)
PRIOR_SIGMA_RANGE = (0.02, 3.0)
META_KEY = "calibration"


class CalibrationError(FastSalError, ValueError):
    """A calibration in a checkpoint or passed to ``fit`` is malformed; the message names the key."""


@dataclass(frozen=True)
class Calibration:
    """Temperature and centre-bias prior applied to a model's log-density (module docstring)."""

    form: str = "power"
    temperature: float = 1.0
    prior_weight: float = 0.0
    prior: tuple[float, float, float, float] = (0.5, 0.5, 0.25, 0.25)  # x, y, sx, sy (relative)
    input_size: tuple[int, int] | None = None
    aspect: bool | None = None
    fitted_on: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON- and ``weights_only``-safe: plain floats, lists and strings."""
        out = asdict(self)
        out["prior"] = dict(zip(("x", "y", "sx", "sy"), (float(v) for v in self.prior)))
        out["input_size"] = list(self.input_size) if self.input_size else None
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Checked: a bad value raises :class:`CalibrationError` naming ``meta['calibration']`` and the key."""
        where = f"meta[{META_KEY!r}]"
        if not isinstance(data, Mapping):
            raise CalibrationError(f"{where} must be a dict of calibration settings, got {type(data).__name__}; "
                                   "rerun fastsal calibrate")
        form = data.get("form", "power")
        if form not in FORMS:
            raise CalibrationError(f"{where}['form'] must be one of {', '.join(FORMS)}, got {form!r}; rerun fastsal calibrate")
        prior = data.get("prior", {})
        try:
            values = {"temperature": float(data.get("temperature", 1.0)), "prior_weight": float(data.get("prior_weight", 0.0)),
                      **{f"prior.{k}": float(prior[k]) for k in ("x", "y", "sx", "sy")}}
        except (TypeError, ValueError, KeyError) as exc:
            raise CalibrationError(f"{where} has a missing or non-numeric value ({exc}); rerun fastsal calibrate") from None
        weights = POWER_WEIGHT_RANGE if form == "power" else MIXTURE_WEIGHT_RANGE
        ranges = {"temperature": TEMPERATURE_RANGE, "prior_weight": weights, "prior.x": PRIOR_CENTRE_RANGE,
                  "prior.y": PRIOR_CENTRE_RANGE, "prior.sx": PRIOR_SIGMA_RANGE, "prior.sy": PRIOR_SIGMA_RANGE}
        for key, (lo, hi) in ranges.items():
            if not (math.isfinite(values[key]) and lo <= values[key] <= hi):
                raise CalibrationError(f"{where}[{key!r}] must be in {lo:g}..{hi:g}, got {values[key]!r}; "
                                       "rerun fastsal calibrate")
        size = data.get("input_size")
        try:
            size = (int(size[0]), int(size[1])) if size else None
        except (TypeError, ValueError, IndexError):
            raise CalibrationError(f"{where}['input_size'] must be [height, width], got {size!r}") from None
        aspect = data.get("aspect")
        return cls(form=form, temperature=values["temperature"], prior_weight=values["prior_weight"],
                   prior=tuple(values[f"prior.{k}"] for k in ("x", "y", "sx", "sy")),  # type: ignore[arg-type]
                   input_size=size, aspect=None if aspect is None else bool(aspect),
                   fitted_on=str(data.get("fitted_on", "")), extra=dict(data.get("extra") or {}))

    def describe(self) -> str:
        """One line for ``-v`` output and model cards."""
        x, y, sx, sy = self.prior
        how = "prior weight" if self.form == "power" else "prior share"
        on = f" on {self.fitted_on}" if self.fitted_on else ""
        return (f"calibrated{on}: {self.form}, T={self.temperature:.3f}, {how} {self.prior_weight:.3f}, "
                f"centre-bias prior at ({x:.2f}, {y:.2f}) sd ({sx:.2f}, {sy:.2f}) of the width/height")


def from_meta(meta: Mapping[str, Any] | None) -> Calibration | None:
    """The checkpoint's calibration, or None when it has none (maps exactly as before)."""
    if not meta or meta.get(META_KEY) is None:
        return None
    return Calibration.from_dict(meta[META_KEY])


def log_prior(shape: Sequence[int], prior: Sequence[float]) -> np.ndarray:
    """(h, w) unnormalised log of the Gaussian prior at pixel centres in relative coordinates."""
    h, w = int(shape[-2]), int(shape[-1])
    x, y, sx, sy = (float(v) for v in prior)
    gx = ((np.arange(w) + 0.5) / w - x) / sx
    gy = ((np.arange(h) + 0.5) / h - y) / sy
    return -0.5 * (gy[:, None] ** 2 + gx[None, :] ** 2)


def _log_normalise(z: np.ndarray) -> np.ndarray:
    """Log-softmax over the last two axes."""
    m = z.max(axis=(-2, -1), keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=(-2, -1), keepdims=True)))


def apply(log_small: np.ndarray, calib: Calibration | None) -> np.ndarray:
    """A (..., h, w) log-density calibrated (a new log-density over the same grid); None: unchanged."""
    if calib is None:
        return log_small
    scaled = log_small / calib.temperature
    if calib.prior_weight == 0.0:
        return _log_normalise(scaled)
    lp = log_prior(log_small.shape, calib.prior)
    if calib.form == "power":
        return _log_normalise(scaled + calib.prior_weight * lp)
    a = calib.prior_weight
    return np.logaddexp(math.log1p(-a) + _log_normalise(scaled), math.log(a) + _log_normalise(lp))
