"""The defaults every entry point shares: the command line, ``TrainConfig`` and the library read
them from here, so a changed default changes everywhere at once.

Imports nothing heavy: the command line reads it to build ``--help`` without loading PyTorch.
"""
from __future__ import annotations

import os

#: The model ``fastsal.load()`` and ``fastsal predict`` use (shipped weights, no download).
MODEL = "fastsal_a_effnet_lite0"
#: The ``fast`` alias: the most accurate shipped weights under FAST_MAX_GMACS at their own input
#: size (chosen on val, scored on test: docs/results.md, "FastSal at its own budget").
FAST_MODEL = "fastsal_a_effnet_lite0_fast"
FAST_MAX_GMACS = 1.0
#: (H, W) the network sees: the training size, OSIE's 4:3 aspect.
INPUT_SIZE: tuple[int, int] = (192, 256)
#: Whether INPUT_SIZE is a pixel budget at each image's own aspect (sides multiples of 32) rather
#: than the exact size every image is squashed to; the models are trained that way.
ASPECT = True
#: Sides (pixels) a network input or a teacher's test-time scale may have: from one cell of the
#: encoder's coarsest (stride-32) feature map to 2048, already ~64x the default's pixels (and
#: memory); larger sizes are not what the models were trained for.
INPUT_SIDE_RANGE: tuple[int, int] = (32, 2048)
#: What training accepts (``TrainConfig`` checks them, ``fastsal train``/``adapt`` parse by them):
#: epochs, images per batch, CPU threads.
EPOCHS_RANGE: tuple[int, int] = (1, 100_000)
BATCH_SIZE_RANGE: tuple[int, int] = (1, 4096)
THREADS_RANGE: tuple[int, int] = (1, 1024)

#: Inference engines, fastest first on CPUs (``benchmarks/backends.py``); ``auto`` tries them in this order.
ENGINES: tuple[str, ...] = ("openvino", "onnxruntime", "torch")
AUTO = "auto"
#: Numerical precision of the network. ``fp32`` (the default) gives PyTorch's maps on every engine
#: and CPU; ``bf16`` and ``int8`` are faster where the CPU supports them, at a measured accuracy cost.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
PRECISION = "fp32"
#: Which precisions each engine offers (bf16 only on CPUs with AVX512_BF16 or AMX, or on GPUs).
ENGINE_PRECISIONS: dict[str, tuple[str, ...]] = {
    "openvino": ("fp32", "bf16", "int8"),
    "onnxruntime": ("fp32", "int8"),
    "torch": ("fp32", "bf16"),
}
#: Which int8 recipe OpenVINO runs (:mod:`fastsal.quantize`): "nncf" (OpenVINO's quantiser, in the
#: [openvino] extra) or "onnxruntime" (the QDQ ONNX graph, [onnx] extra); $FASTSAL_OPENVINO_INT8 overrides.
OPENVINO_INT8 = "nncf"
DEVICE = "cpu"
#: Size limit of the model cache (:mod:`fastsal.runtime.cache`) in megabytes; least recently used entries
#: go first. The default model takes ~20 MB as a graph plus ~20 MB per compiled input shape and
#: batch size; ``$FASTSAL_CACHE_MAX_MB`` overrides it.
CACHE_MAX_MB = 1024
#: Relative tolerance (of the map's peak) within which every fp32 engine reproduces PyTorch's map.
FP32_MAP_RTOL = 1e-4

#: Image outputs of ``fastsal predict``: viewable PNG, overlay JPEG, float32 ``.npy`` probabilities.
OUTPUT_FORMATS: tuple[str, ...] = ("png", "overlay", "npy")
OUTPUT_FORMAT = "png"
#: ``fastsal predict --format benchmark``: the MIT/Tuebingen saliency benchmark's submission layout,
#: ``saliency_maps/<stimulus>.jpg`` (MIT300/CAT2000: a JPEG of the stimulus's name and size) and
#: ``log_densities/<stimulus>.npy`` (natural-log density, logsumexp 0: probabilistic evaluation).
BENCHMARK_FORMATS: tuple[str, ...] = ("saliency_jpg", "log_density")
BATCH_SIZE = 8
WORKERS = 2

#: Canonical dataset splits; never train or tune on ``test``.
SPLITS: tuple[str, ...] = ("train", "val", "test")
EVAL_SPLIT = "test"

#: The fixation density's Gaussian: one degree of visual angle (MIT benchmark convention), in the
#: dataset's own pixels per degree; SIGMA_PX where a dataset does not know its geometry (about
#: one degree for an 800x600 image seen at OSIE's distance).
SIGMA_DEG = 1.0
#: Registered dataset readers (``fastsal.data.datasets.DATASETS``, in the same order; the registry
#: asserts that at import), named here so that ``--help`` lists them without importing the readers.
DATASET_NAMES: tuple[str, ...] = ("osie", "mit1003", "scene", "cat2000", "salicon", "folder", "pseudo")
SIGMA_PX = 24.0

#: The environment variable the command line reads ``--data-dir`` from when it is not given (the
#: folder holding the datasets named in ``--data``). The library has no default data folder.
DATA_DIR_ENV = "FASTSAL_DATA_DIR"


def data_dir() -> str | None:
    """``$FASTSAL_DATA_DIR`` (:data:`DATA_DIR_ENV`), or None when it is unset or empty."""
    return os.environ.get(DATA_DIR_ENV) or None


#: Training loss: KLD - CC - NSS_WEIGHT * NSS (also the validation score that selects checkpoints).
NSS_WEIGHT = 0.1
LOSS_WEIGHTS: tuple[float, float, float] = (1.0, 1.0, NSS_WEIGHT)

#: Knowledge transfer (``fastsal pseudo-label``, ``train --teacher``, ``adapt``). A teacher preset
#: names its sources and test-time augmentation; ``default-ensemble`` is the shipped default model
#: with flips at three scales around the 384x512 it ships at: the best mean information gain over
#: the OSIE and MIT1003 ``val`` splits of the TTAs tried (README, Knowledge transfer). Re-select it
#: whenever the default's weights change: the scales are the weights' own.
TEACHER = "default-ensemble"
TEACHER_PRESETS: dict[str, tuple[tuple[str, ...], str]] = {
    "default-ensemble": (("default",), "flip,scales=288x384+384x512+480x640"),
}
#: Losses a student can learn a teacher density with: ``cross_entropy`` = H(teacher, student), the
#: information-theoretic one (a proper scoring rule: its minimum is the teacher's density itself);
#: ``paper`` = 0.5 KL + 0.3 BCE + 0.2 (1 - cosine), the FastSal paper's loss on DeepGaze II labels.
DISTILL_LOSSES: tuple[str, ...] = ("cross_entropy", "paper")
DISTILL_LOSS = "cross_entropy"
#: Share of on-the-fly distillation views that are a mixup of two images (the teacher labels the mix).
MIXUP = 0.5
#: ``fastsal adapt``: the default wall-clock budget in minutes, and the most epochs it may plan.
ADAPT_BUDGET_MIN = 15.0
ADAPT_MAX_EPOCHS = 30
#: ``fastsal adapt``'s teacher TTA: the teacher runs at every step there, so flips alone (2 runs,
#: 0.008 bits below the preset's 6 runs on val) buy about three times the epochs in a budget.
ADAPT_TTA = "flip"
#: ``fastsal adapt``'s peak learning rate: a third of training's, since it fine-tunes a trained model.
ADAPT_LR = 1e-4
