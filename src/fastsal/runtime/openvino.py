"""OpenVINO: its runner and the cache of its compiled models (they share the precision-hint logic)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from fastsal._version import __version__
from fastsal.cpu import cpu_features, cpu_flags, cpu_name
from fastsal.errors import first_line
from fastsal.files import atomic_write_bytes, file_lock, file_sha256, write_json
from fastsal.runtime.cache import prune, touch
from fastsal.runtime.engines import EngineError, EngineNotice, check_precision
from fastsal.runtime.runners import GraphRunner, check_graph

# OpenVINO's name for each precision's INFERENCE_PRECISION_HINT (int8 graphs keep their float
# parts in f32: the QDQ nodes decide what is int8, nothing else may be reduced)
_OV_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class OpenVINORunner(GraphRunner):
    """An OpenVINO IR (``.xml``) or ONNX file on OpenVINO's CPU plugin.

    Compiled with the latency hint, ``threads`` inference threads and the precision hint of
    ``precision`` (f32 unless bf16 is asked for; checked after compiling or importing).
    Dynamic-batch graphs are compiled once per batch size met: static shapes compile to faster
    kernels. ``cache_dir`` keeps the compiled models there (see :class:`BlobCache`), so later
    loads import instead of compiling. ``compiled`` maps a batch size to (infer request, output);
    ``imported`` holds the batch sizes that came from the blob cache.
    """

    backend = "openvino"

    def __init__(self, path: str | Path, input_size: Sequence[int], graph_size: Sequence[int] | None = None,
                 precision: str = "fp32", *, threads: int | None = None, cache_dir: str | Path | None = None,
                 reference: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__(input_size, graph_size or input_size, precision)
        self.reference = reference
        try:
            import openvino as ov
        except ImportError:
            raise EngineError("backend 'openvino' needs openvino: pip install 'fastsal[openvino]'") from None
        if precision == "bf16":
            check_precision(precision)
        self.path = Path(path)
        self.core = ov.Core()
        # The whole config goes to compile_model and import_model alike: OpenVINO applies the
        # precision hint at import too, and an import without it runs in bf16 on BF16 CPUs.
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_HINT[precision]}
        if threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = self.core.read_model(str(self.path))
        except RuntimeError as exc:
            raise EngineError(f"{path}: OpenVINO cannot read this model ({first_line(exc)[:200]})") from None
        self.blobs = (BlobCache(Path(cache_dir), self.path, self.config, ov.__version__, self.graph_size)
                      if cache_dir is not None else None)
        self.compiled: dict[int, tuple[Any, Any]] = {}
        self.imported: set[int] = set()
        self._compile(1)  # errors surface here, not at the first call

    def _compile(self, n: int) -> tuple[Any, Any]:
        """The model at batch ``n``: imported from the blob cache when a valid blob is there, else
        compiled (and the blob published for the next load)."""
        if self.blobs is None:
            compiled = self.compile_batch(n)
        else:
            with self.blobs.locked(n):
                compiled = self.blobs.load(n, self.core, self.config, self._precision_ok)
                if compiled is not None and self.reference is not None \
                        and not check_graph(compiled, n, self.graph_size, self.precision, self.reference):
                    self.blobs.discard(n)
                    warnings.warn(f"cached compiled model {self.blobs.path(n)} did not reproduce the weights' "
                                  f"output (changed after it was written?); rebuilt it", EngineNotice, stacklevel=5)
                    compiled = None
                if compiled is not None:
                    self.imported.add(n)
                else:
                    compiled = self.compile_batch(n)
                    self.blobs.publish(n, compiled, self._hint_of(compiled))
        self.compiled[n] = (compiled.create_infer_request(), compiled.output(0))
        return self.compiled[n]

    def compile_batch(self, n: int) -> Any:
        model = self.model
        shape = model.input(0).get_partial_shape()
        if shape.is_dynamic:  # free batch and/or spatial dimensions: compile this one shape
            model = model.clone()
            fixed = (n, 3, *self.graph_size)
            for i in range(4):
                if shape[i].is_dynamic:
                    shape[i] = fixed[i]
            model.reshape({model.input(0): shape})
        try:
            compiled = self.core.compile_model(model, "CPU", self.config)
        except RuntimeError as exc:
            raise EngineError(f"{self.path}: OpenVINO cannot compile this model ({first_line(exc)[:200]})") from None
        if not self._precision_ok(self._hint_of(compiled)):
            raise EngineError(f"{self.path}: OpenVINO compiled in {self._hint_of(compiled)} instead of "
                               f"{self.config['INFERENCE_PRECISION_HINT']}; use {{option}} onnxruntime or torch for exact maps",
                              option="backend")
        return compiled

    @staticmethod
    def _hint_of(compiled: Any) -> str:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()

    def _precision_ok(self, got: str) -> bool:
        want = self.config["INFERENCE_PRECISION_HINT"]
        return want in got or (want == "f32" and "float32" in got) or (want == "bf16" and "bfloat16" in got)

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        request, output = self.compiled.get(n) or self._compile(n)
        return request.infer({0: x})[output]  # share_outputs=False (default): a fresh array per call


_BLOB_FORMAT = "fastsal-openvino-blob/1"


class BlobCache:
    """Compiled OpenVINO models kept as ``<folder>/<key>.blob`` + ``<key>.blob.json``.

    Why not OpenVINO's own ``CACHE_DIR``: it is not safe across processes (three ``--shard``
    runs on an empty cache failed with "cannot set permissions: No such file or directory
    [...blob]", once with a Bus error) and it imports a blob damaged in the middle without a check
    (wrong maps, exit 0). Here:

    - the key is a SHA-256 over everything the compiled code depends on: the model files'
      SHA-256, the batch size, the whole compile config (precision hint and threads included),
      the OpenVINO version and the CPU (name and feature flags);
    - the sidecar records the blob's SHA-256 and size, the key's inputs and the precision the
      compiled model reported; a blob is imported only when all of them match, otherwise it is
      rebuilt (a damaged blob with a one-line :class:`EngineNotice`);
    - blob and sidecar are written atomically (temporary, fsync, rename) under an exclusive lock
      on ``<key>.blob.lock``, and read under it: processes compiling the same batch size take
      turns, the later ones import what the first published;
    - anything that goes wrong with the cache (unreadable, import error, full disk) falls back to
      compiling: the cache can only save time, never fail a load.
    """

    def __init__(self, folder: Path, model_path: Path, config: dict[str, Any], openvino_version: str,
                 graph_size: Sequence[int] = (0, 0)) -> None:
        self.folder = folder
        model_files = [model_path] + ([model_path.with_suffix(".bin")] if model_path.suffix == ".xml" else [])
        self.inputs: dict[str, Any] = {
            "model_sha256": [file_sha256(f) for f in model_files],
            "input_hw": [int(v) for v in graph_size],
            "fastsal_version": __version__,
            "config": {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in sorted(config.items())},
            "device": "CPU",
            "openvino_version": str(openvino_version),
            "cpu": {"name": cpu_name(), "features": cpu_features(), "flags_sha256": _flags_digest(cpu_flags())},
        }

    def key(self, n: int) -> dict[str, Any]:
        """The key's inputs for batch ``n`` (what the sidecar records)."""
        return {**self.inputs, "batch": int(n)}

    def path(self, n: int) -> Path:
        digest = hashlib.sha256(json.dumps(self.key(n), sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest[:32]}.blob"

    @contextlib.contextmanager
    def locked(self, n: int) -> Iterator[None]:
        """Exclusive use of batch ``n``'s blob: one process imports or compiles-and-publishes at a time."""
        blob = self.path(n)
        try:
            blob.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # publish will fail quietly and the model is compiled every time
        with file_lock(blob.with_name(blob.name + ".lock")):
            yield

    def load(self, n: int, core: Any, config: dict[str, Any], precision_ok: Callable[[str], bool]) -> Any | None:
        """The compiled model from batch ``n``'s blob, or None to compile (missing, stale, damaged,
        or not importable; a damaged blob is deleted and reported)."""
        blob = self.path(n)
        side = self._sidecar(blob, n)
        if side is None:
            return None
        try:
            data = blob.read_bytes()
        except OSError:
            return None
        if len(data) != side["size"] or hashlib.sha256(data).hexdigest() != side["sha256"]:
            self.discard(n)
            warnings.warn(f"cached compiled model {blob} was damaged; rebuilt it", EngineNotice, stacklevel=6)
            return None
        try:
            compiled = core.import_model(data, "CPU", config)
        except Exception:  # noqa: BLE001 - whatever OpenVINO raises, compiling again is the answer
            self.discard(n)
            return None
        hint = OpenVINORunner._hint_of(compiled)
        if not precision_ok(hint) or hint != side["precision_hint"]:
            self.discard(n)
            return None
        touch(blob)
        return compiled

    def publish(self, n: int, compiled: Any, hint: str) -> None:
        """Write batch ``n``'s blob and then its sidecar (each atomically); a failure only costs the
        next load a compile, so it is reported once as a notice, never raised."""

        blob = self.path(n)
        try:
            data = compiled.export_model()
            data = data.getvalue() if hasattr(data, "getvalue") else bytes(data)
            atomic_write_bytes(blob, data)
            write_json({"format": _BLOB_FORMAT, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                        "batch": int(n), "precision_hint": hint, "key": self.key(n)},
                       blob.with_name(blob.name + ".json"))
            prune(self.folder.parent, keep=blob)
        except (OSError, RuntimeError) as exc:
            warnings.warn(f"could not save the compiled model to {blob} ({first_line(exc)[:200]}); "
                          f"later loads will compile again (check that {self.folder} is writable)",
                          EngineNotice, stacklevel=6)

    def _sidecar(self, blob: Path, n: int) -> dict[str, Any] | None:
        """The sidecar of ``blob`` if it is ours, whole and for exactly this key; else None."""
        try:
            side = json.loads(blob.with_name(blob.name + ".json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not (isinstance(side, dict) and side.get("format") == _BLOB_FORMAT and side.get("key") == self.key(n)
                and isinstance(side.get("sha256"), str) and isinstance(side.get("size"), int)
                and isinstance(side.get("precision_hint"), str)):
            return None
        return side

    def discard(self, n: int) -> None:
        """Delete batch ``n``'s blob and sidecar (the caller holds its lock)."""
        blob = self.path(n)
        for f in (blob, blob.with_name(blob.name + ".json")):
            with contextlib.suppress(OSError):
                f.unlink()


def _flags_digest(flags: frozenset[str]) -> str:
    return hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]


__all__ = ["BlobCache", "OpenVINORunner"]
