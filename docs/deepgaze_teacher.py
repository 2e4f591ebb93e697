"""A DeepGaze IIE teacher for fastsal, as an adapter file:

    fastsal pseudo-label --teacher py:docs/deepgaze_teacher.py:deepgaze --tta flip \
        --resolution 384x512 --images photos/ -o labels/
    fastsal adapt --teacher py:docs/deepgaze_teacher.py:deepgaze --images photos/ -o runs/mine

fastsal never downloads DeepGaze: this needs the ``deepgaze_pytorch`` package
(https://github.com/matthias-k/DeepGaze) with its weights already on this machine (its
``pretrained=True`` reads them from the torch hub cache), and DeepGaze's MIT1003 centre bias
(``centerbias_mit1003.npy``, a 1024x1024 log-density) beside this file or at ``DEEPGAZE_CENTERBIAS``.

Any function ``(H, W, 3) uint8 RGB -> (h, w) log-density`` works the same way (see
:class:`fastsal.teacher.CallableTeacher`); the teacher hash of a ``py:`` source is this file's
SHA-256, so edit the file (e.g. the ``WEIGHTS`` note below) whenever the model's weights change.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

WEIGHTS = "DeepGazeIIE, deepgaze_pytorch's pretrained weights"  # part of this file's hash: the labels' identity
CENTERBIAS = Path(os.environ.get("DEEPGAZE_CENTERBIAS", Path(__file__).with_name("centerbias_mit1003.npy")))


@lru_cache(maxsize=1)
def _model():
    import deepgaze_pytorch

    return deepgaze_pytorch.DeepGazeIIE(pretrained=True).eval()  # weights from the local torch hub cache


def deepgaze(rgb: np.ndarray) -> np.ndarray:
    """DeepGaze IIE's log-density of one image, with its own centre bias (as the FastSal authors'
    DeepGaze II pseudo-labels were: centre bias included)."""
    import torch
    from scipy.ndimage import zoom
    from scipy.special import logsumexp

    h, w = rgb.shape[:2]
    centre = np.load(CENTERBIAS)
    cb = zoom(centre, (h / centre.shape[0], w / centre.shape[1]), order=0, mode="nearest")
    cb -= logsumexp(cb)
    x = torch.tensor(rgb.transpose(2, 0, 1)[None].copy(), dtype=torch.float32)
    with torch.no_grad():
        return _model()(x, torch.tensor(cb[None]))[0, 0].double().numpy()
