"""Runners: the network on one engine, called on a batch (the :class:`Runner` protocol).

A runner is called on an (N, 3, H, W) float32 RGB batch in [0, 1] at its ``input_size`` and
returns (N, 1, H, W) float32 saliency logits; it names its ``backend`` (the engine) and its
``precision``. Here: PyTorch on the model in memory (:class:`TorchRunner`), the file engines'
shared resize around a fixed graph (:class:`GraphRunner`), ONNX Runtime, TorchScript, the
static-batch wrapper of exported files, and the probe that binds a graph to the weights in memory
(:func:`check_graph`). OpenVINO's runner lives in :mod:`fastsal.runtime.openvino`.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastsal import defaults
from fastsal.errors import first_line
from fastsal.runtime.engines import ENGINE_PRECISIONS, EngineError, check_device, check_precision, size_pair


@runtime_checkable
class Runner(Protocol):
    """The network on one engine: ``runner(batch) -> logits``.

    ``batch``: (N, 3, H, W) float32 RGB in [0, 1] with (H, W) = ``input_size``; returns (N, 1, H, W)
    float32 logits (density = softmax over the H*W pixels). Not for concurrent calls from several
    threads.
    """

    backend: str
    precision: str
    input_size: tuple[int, int]

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def check_batch(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(size):
        h, w = size
        raise EngineError(f"the network expects an (N, 3, {h}, {w}) float32 batch; got shape {tuple(np.shape(batch))}")
    # Here, before any engine, so all refuse alike: OpenVINO turned an all-NaN batch into finite,
    # plausible logits where ONNX Runtime and PyTorch gave NaN.
    if not np.isfinite(x).all():
        raise EngineError(f"the network's input batch (shape {x.shape}) contains NaN or inf values; "
                           "pass finite values in [0, 1]")
    return x


class TorchRunner:
    """The model on PyTorch (CPU or GPU): the exactly equivalent fused rewrite
    (:func:`fastsal.models.fuse.fuse`: batch norm folded, FastSal-C's head reduced before
    upsampling; ~10x faster for C), in fp32 or, where the hardware has it, under bf16 autocast."""

    backend = "torch"

    def __init__(self, model: nn.Module, input_size: Sequence[int] = defaults.INPUT_SIZE, precision: str = "fp32",
                 *, device: str | torch.device = "cpu", fused: nn.Module | None = None, fuse_model: bool = True) -> None:
        from fastsal.models.fuse import fuse

        if precision not in ENGINE_PRECISIONS["torch"]:
            raise EngineError(f"backend 'torch' has no {precision} mode; use {{option}} openvino or onnxruntime",
                              option="backend")
        self.device = check_device(device)
        if precision == "bf16" and self.device.type == "cpu":
            check_precision(precision)
        self.precision = precision
        self.input_size = size_pair(input_size)
        net = fused if fused is not None else (fuse(model.eval()) if fuse_model else model.eval())
        self.net = net.to(self.device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(check_batch(batch, self.input_size)).to(self.device)
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.net(x).float().cpu().numpy()

    def __repr__(self) -> str:
        return f"TorchRunner({self.precision}, {self.input_size[0]}x{self.input_size[1]}, {self.device})"


class GraphRunner:
    """Shared part of the file-based engines: the graph has a fixed spatial size (multiples of
    32); other input sizes are resized on the way in and out exactly as
    :class:`~fastsal.models.FastSal` does internally, so every engine gives the same map."""

    backend = ""

    def __init__(self, input_size: Sequence[int], graph_size: Sequence[int], precision: str) -> None:
        self.input_size = size_pair(input_size)
        self.graph_size = size_pair(graph_size)
        self.precision = precision

    def run_graph(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = check_batch(batch, self.input_size)
        if self.graph_size == self.input_size:
            return self.run_graph(x)
        t = F.interpolate(torch.from_numpy(x), size=self.graph_size, mode="bilinear", align_corners=False,
                          antialias=True)
        y = torch.from_numpy(self.run_graph(np.ascontiguousarray(t.numpy())))
        return F.interpolate(y, size=self.input_size, mode="bilinear", align_corners=False).numpy()

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"{type(self).__name__}({self.precision}, {h}x{w})"


class OnnxRuntimeRunner(GraphRunner):
    """An ONNX file on ONNX Runtime's CPU provider (fp32, or int8 for a quantised QDQ graph)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, input_size: Sequence[int], graph_size: Sequence[int] | None = None,
                 precision: str = "fp32", *, threads: int | None = None) -> None:
        super().__init__(input_size, graph_size or input_size, precision)
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineError("backend 'onnxruntime' needs onnxruntime: pip install 'fastsal[onnx]'") from None
        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise EngineError(f"{path}: ONNX Runtime cannot load this model ({first_line(exc)[:200]})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]


class StaticBatch:
    """Runs a static-batch-1 export one image at a time, so any N works; passes the rest through."""

    def __init__(self, inner: GraphRunner, sidecar: dict[str, Any]) -> None:
        self.inner = inner
        self.sidecar = sidecar
        self.backend, self.precision, self.input_size = inner.backend, inner.precision, inner.input_size
        self.name = sidecar["model"]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = check_batch(batch, self.input_size)
        if self.sidecar["dynamic_batch"] or x.shape[0] == 1:
            return self.inner(x)
        return np.concatenate([self.inner(x[i:i + 1]) for i in range(x.shape[0])])

    def __repr__(self) -> str:
        return f"{self.inner!r} for {self.name!r}"


class TorchScriptRunner(GraphRunner):
    backend = "torch"

    def __init__(self, path: Path, input_size: Sequence[int], graph_size: Sequence[int], precision: str, *,
                 threads: int | None = None) -> None:
        super().__init__(input_size, graph_size, precision)
        if precision == "bf16":
            check_precision(precision)
        if threads is not None:
            torch.set_num_threads(int(threads))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                self.module = torch.jit.load(str(path), map_location="cpu").eval()
            except RuntimeError as exc:
                raise EngineError(f"{path}: not a loadable TorchScript file ({first_line(exc)[:200]})") from None

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.module(torch.from_numpy(x)).float().numpy()


# How far a graph's logits on the probe may be from PyTorch's, as a share of their range: fp32 agrees
# to ~1e-6 everywhere. Reduced precision is checked loosely, for a different or damaged graph, not its
# rounding: on average within 5 % of the range and correlated >= 0.95 (measured with the default model
# on an AVX-512 VNNI CPU: int8 mean 1.6 %, max 9.3 %, correlation 0.996; bf16 mean 0.3 %, 0.9998).
_PROBE_RTOL = 1e-3
_PROBE_MEAN_RTOL, _PROBE_MIN_CORR = 0.05, 0.95


def reference_logits(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch's logits for a probe batch at a graph size (a multiple of 32, where the model's own
    resize is the identity), memoised per shape."""
    memo: dict[tuple[int, ...], np.ndarray] = {}

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape not in memo:
            training = model.training
            try:
                with torch.inference_mode():
                    memo[x.shape] = model.eval()(torch.from_numpy(x)).float().numpy()
            finally:
                model.train(training)
        return memo[x.shape]

    return run


def check_graph(compiled: Any, n: int, graph: Sequence[int], precision: str,
                 reference: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Whether a compiled OpenVINO model or an ONNX Runtime session gives ``reference``'s logits on
    a fixed probe at batch ``n``: what binds a cached graph to the weights in memory (a graph file
    and its sidecar can be changed together; the weights the user loaded cannot)."""
    probe = np.random.default_rng(0).random((1, 3, *graph), dtype=np.float32)
    want = reference(probe)
    batch = np.ascontiguousarray(np.repeat(probe, n, axis=0))
    if hasattr(compiled, "create_infer_request"):
        got = compiled.create_infer_request().infer({0: batch})[compiled.output(0)]
    else:
        got = compiled.run(None, {compiled.get_inputs()[0].name: batch})[0]
    if got.shape != (n, *want.shape[1:]) or not np.isfinite(got).all():
        return False
    spread = float(want.max() - want.min()) or 1.0
    err = np.abs(got - want)
    if precision == "fp32":
        return bool(err.max() <= _PROBE_RTOL * spread)
    corr = np.corrcoef(got[:1].ravel(), want.ravel())[0, 1]
    return bool(err.mean() <= _PROBE_MEAN_RTOL * spread and corr >= _PROBE_MIN_CORR)


__all__ = ["GraphRunner", "OnnxRuntimeRunner", "Runner", "StaticBatch", "TorchRunner", "TorchScriptRunner",
           "check_batch", "check_graph", "reference_logits"]
