"""Where the network runs: one :class:`Runner` protocol, three engines (OpenVINO, ONNX Runtime,
PyTorch), three precisions (fp32, bf16, int8), and the cache of converted and compiled models.

A runner is called on an (N, 3, H, W) float32 RGB batch in [0, 1] at its ``input_size`` and
returns (N, 1, H, W) float32 saliency logits; it names its ``backend`` (the engine) and its
``precision``. Everything above it (pre- and post-processing in :mod:`fastsal.predict`, folders in
:mod:`fastsal.batch`, video, the cost table and the benchmarks) is the same for every engine.

**The numerical contract.** By default every engine computes in fp32 and reproduces PyTorch's
maps within :data:`fastsal.defaults.FP32_MAP_RTOL` of the peak on every x86 CPU. This has to be
asked for: OpenVINO computes in bfloat16 by default on CPUs with AVX512_BF16 or AMX, which moves
the maps by 2-5 % of the peak, so it is compiled with ``INFERENCE_PRECISION_HINT=f32`` and the
compiled model's hint is checked. ONNX Runtime's CPU provider computes in fp32 unless a graph is
quantised. Reduced precision is a choice (``precision="bf16"`` or ``"int8"``) with a measured cost
(README): bf16 runs on OpenVINO and PyTorch where the CPU has native bf16 (refused elsewhere,
where it would only be emulated); int8 runs on OpenVINO as NNCF quantised it
(:mod:`fastsal.quantize`, in the ``[openvino]`` extra), and on ONNX Runtime as the calibrated QDQ
graph of :mod:`fastsal.export` (``[onnx]``).

**Choosing an engine.** ``auto`` takes the fastest installed engine that offers the precision
(OpenVINO, then ONNX Runtime, then PyTorch); when one cannot prepare the model (a missing package,
a conversion or compile failure) the next one is tried and a one-line note says why and what would
fix it. A named engine that is not installed falls back the same way. Devices other than the CPU
run on PyTorch.

**The cache** (:mod:`fastsal.runtime.cache`: where, who may write it, size limit). Graph engines
need the model as a file: OpenVINO IR converted straight from the PyTorch module (no ``onnx``
package needed), ONNX for ONNX Runtime and for int8 (OpenVINO's int8 is the IR quantised by NNCF,
:mod:`fastsal.quantize`, unless only the ``onnxruntime`` recipe is installed). Files are made once
per weights (SHA-256 of the state_dict), fastsal version and precision, with free spatial
dimensions, so every input size uses the same file (one conversion, not one per image shape);
written atomically and kept in ``$FASTSAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastsal``, else
``~/.cache/fastsal`` (safe to delete: ``fastsal cache clear``); OpenVINO's compiled models, one per
input shape and batch size (static shapes compile to faster kernels, in a fraction of a second),
are kept in its ``openvino/`` folder, each checked against its SHA-256 before use
(:class:`~fastsal.runtime.openvino.BlobCache`). Before a cached graph is used, its output on a
probe is compared with PyTorch's on the weights in memory (:func:`~fastsal.runtime.runners.check_graph`):
a graph that does not come from these weights is rebuilt. Several processes may share the cache
(e.g. ``fastsal predict --shard i/N`` started together): lock files beside the artefacts make them
take turns, so one converts or compiles and the others reuse its files. An unwritable cache falls
back to a temporary folder, with a notice.

**Modules**, lowest first: :mod:`~fastsal.runtime.engines` (the engine table, checks, errors; no
PyTorch at import), :mod:`~fastsal.runtime.cache` (the one cache; no PyTorch at import),
:mod:`~fastsal.runtime.runners` (the protocol and the PyTorch / ONNX Runtime / TorchScript
runners), :mod:`~fastsal.runtime.openvino` (OpenVINO's runner and compiled-model cache),
:mod:`~fastsal.runtime.build` (a runner for a model or an exported file, with fallbacks). The
names below are imported from them on first use, so ``import fastsal.runtime`` stays light.

**A new engine** goes in as: its name and precisions in :data:`fastsal.defaults.ENGINES` /
``ENGINE_PRECISIONS`` (the order is ``auto``'s), its package and pip extra in
:data:`~fastsal.runtime.engines.PACKAGES` / ``EXTRAS``, a runner (a :class:`GraphRunner` subclass in
:mod:`~fastsal.runtime.runners`, or its own module as OpenVINO has), the model file it reads from
:mod:`~fastsal.runtime.cache`, and its branch in :func:`~fastsal.runtime.build.make_runner` and, for
exported files, :data:`~fastsal.runtime.build.ENGINES_FOR_FORMAT`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from fastsal._lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(("AUTO", "ENGINES", "ENGINE_PRECISIONS", "PRECISIONS", "EngineError", "EngineNotice",
                     "candidates", "check_device", "check_precision", "installed"), "fastsal.runtime.engines"),
    **dict.fromkeys(("CacheError", "cache_dir", "writable_cache"), "fastsal.runtime.cache"),
    **dict.fromkeys(("GraphRunner", "OnnxRuntimeRunner", "Runner", "StaticBatch", "TorchRunner",
                     "TorchScriptRunner"), "fastsal.runtime.runners"),
    "OpenVINORunner": "fastsal.runtime.openvino",
    **dict.fromkeys(("build_runner", "default_calibration_images", "load_runner", "make_runner"),
                    "fastsal.runtime.build"),
}

__all__ = [  # = sorted(_LAZY), spelled out for linters
    "AUTO", "CacheError", "ENGINES", "ENGINE_PRECISIONS", "EngineError", "EngineNotice", "GraphRunner",
    "OnnxRuntimeRunner", "OpenVINORunner", "PRECISIONS", "Runner", "StaticBatch", "TorchRunner", "TorchScriptRunner",
    "build_runner", "cache_dir", "candidates", "check_device", "check_precision", "default_calibration_images",
    "installed", "load_runner", "make_runner", "writable_cache",
]

if TYPE_CHECKING:
    from fastsal.runtime.build import build_runner, default_calibration_images, load_runner, make_runner
    from fastsal.runtime.cache import CacheError, cache_dir, writable_cache
    from fastsal.runtime.engines import (
        AUTO,
        ENGINE_PRECISIONS,
        ENGINES,
        PRECISIONS,
        EngineError,
        EngineNotice,
        candidates,
        check_device,
        check_precision,
        installed,
    )
    from fastsal.runtime.openvino import OpenVINORunner
    from fastsal.runtime.runners import (
        GraphRunner,
        OnnxRuntimeRunner,
        Runner,
        StaticBatch,
        TorchRunner,
        TorchScriptRunner,
    )


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
