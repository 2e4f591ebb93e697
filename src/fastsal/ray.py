"""fastsal on a Ray cluster (``pip install 'fastsal[ray]'``): a pool of model-holding actors.

    import ray, fastsal.ray
    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)   # or a list of paths
    rows = fastsal.ray.predict_dataset(ds, outputs=("peaks", "grid", "crops"), aspects=["16:9", "1:1"])
    rows.write_parquet("s3://bucket/saliency/")          # 10^7 images need not mean 10^7 files

Why Ray Data and not a home-made scheduler: it balances load over the actors, retries the work
of an actor or node that died (actors restart, tasks retry), streams inputs and outputs through
the object store, and reads and writes whatever filesystems pyarrow can (local, S3, GCS, HDFS).

Each actor loads the model once (:class:`_Model`) with engine threads from its own CPUs
(:func:`fastsal.cpu.threads_for`), so ``actors x cpus_per_actor`` CPUs do the work without
oversubscription. The per-image work is the library's own: decoding at a reduced size
(:func:`fastsal.images.load_resized`), the network (:class:`fastsal.predict.Predictor`), peaks and
the grid (:mod:`fastsal.peaks`), crops (:func:`fastsal.cropping.crop_boxes` on the network's own
map, as ``fastsal crop`` searches), so rows say what the server and the commands say.

Security: a Ray cluster runs any code that whoever reaches it sends; see README "Beyond one
machine" (token authentication, private network, no public dashboard).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence, cast

import numpy as np

from fastsal import defaults
from fastsal.errors import FastSalError

if TYPE_CHECKING:  # pragma: no cover
    import ray.data
    from ray.data import Dataset  # the name inside predict_dataset, where a local `ray` shadows the module

#: What :func:`predict_dataset` can put in each row beside the input's own columns.
ROW_OUTPUTS: tuple[str, ...] = ("peaks", "grid", "crops", "map")
#: How a row's ``map`` is encoded: the bytes ``fastsal predict --format png|npy`` writes.
MAP_FORMATS: tuple[str, ...] = ("png", "npy")
#: Actors in the pool unless told otherwise; each holds one model.
ACTORS = 2

__all__ = ["ACTORS", "MAP_FORMATS", "ROW_OUTPUTS", "ActorLoader", "RayError", "RayExecutor", "connect",
           "predict_dataset", "predict_files"]


class RayError(FastSalError, ValueError):
    """Ray is missing or unreachable, or a Ray-specific setting is unusable; one line with the fix."""


def _ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`RayError` saying how to install it."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayError(f"Ray is not installed ({exc.name or exc}); pip install 'fastsal[ray]'") from None
    return ray


def connect(address: str | None = "auto") -> Any:
    """Join the Ray cluster at ``address`` unless this process already has: ``"auto"`` is the one
    ``RAY_ADDRESS`` names, ``"local"`` starts one on this machine, else ``HOST:PORT`` or
    ``ray://HOST:PORT``. Returns the ``ray`` module."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    if address is None or address == "auto":
        address = os.environ.get("RAY_ADDRESS", "").strip()
        if not address:
            raise RayError("ray address 'auto' needs RAY_ADDRESS set (HOST:PORT of the head); set it, or pass the "
                           "address, or 'local' for a cluster on this machine")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing phones home unless the user asked
    from fastsal.signals import kept

    try:
        # ray.init replaces SIGTERM/SIGINT handlers; the job layer's one handler (exit 143/130, manifest saved) stays
        with kept():
            ray.init(address=None if address == "local" else address, log_to_driver=False,
                     logging_level=logging.WARNING, include_dashboard=False if address == "local" else None)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayError(f"cannot join the Ray cluster at {address}: {reason}; start it (ray start --head) or fix "
                       f"the address") from None
    return ray


# -- the job layer's executor: actors compute, the driver writes ------------------------------------

@dataclass(frozen=True)
class ActorLoader:
    """A picklable model loader for tasks sent to actors: ``factory(**kwargs)`` (default
    :func:`fastsal.predict.load`; :class:`fastsal.teacher.Teacher` for labels), with ``threads``
    (when not given) from the CPUs Ray granted the actor (:func:`fastsal.cpu.threads_for`), so
    actors sharing a node do not oversubscribe it."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    factory: Any = None

    def __call__(self) -> Any:
        from fastsal.cpu import threads_for

        if self.factory is None:
            from fastsal.predict import load as factory
        else:
            factory = self.factory
        kwargs = dict(self.kwargs)
        if kwargs.get("threads") is None:
            kwargs["threads"] = threads_for(_actor_cpus())
        return factory(**kwargs)


@dataclass
class _Fatal:
    """An error the user must fix (a damaged weights file on the workers...), carried back from an
    actor to be raised on the driver as it is: Ray would wrap it in its own exception types."""

    error: BaseException


class _TaskActor:
    """A Ray Data callable class holding one job task (:class:`fastsal.jobs.Task`); its model loads
    on the first batch, once per actor. Rows in: pickled items; rows out: pickled results."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ray import cloudpickle  # by value: a task, item or result class defined in a script too

        items = [pickle.loads(blob) for blob in batch["item"]]
        try:
            out = [cloudpickle.dumps(r) for r in self.task.compute_batch(items)]
        except FastSalError as exc:
            out = [cloudpickle.dumps(_Fatal(exc))]
        return {"result": np.array(out, dtype=object)}


class RayExecutor:
    """How :func:`fastsal.jobs.run` computes items on a Ray cluster (``executor=RayExecutor(...)``).

    The driver keeps everything else of the job layer: collecting, sharding, skipping what is done
    (before any model loads), the manifest, failures, signals. A pool of ``actors`` actors (default:
    one per ``cpus_per_actor`` CPUs of the cluster), each holding the task's model, runs
    ``task.compute_batch`` on batches of ``batch_size`` items and returns the encoded bytes; the
    driver writes them atomically (``emit``), so outputs are the local run's, byte for byte.

    Ray Data restarts a lost actor and retries its batches (a node that died mid-run); should the
    dataset fail anyway, the items not yet written are submitted again, up to ``attempts`` times.
    """

    def __init__(self, address: str | None = "auto", *, actors: int | None = None, cpus_per_actor: float = 1.0,
                 attempts: int = 3) -> None:
        _check_pool(actors if actors is not None else 1, cpus_per_actor, 1)
        if not isinstance(attempts, int) or attempts < 1:
            raise RayError(f"attempts must be a whole number >= 1, got {attempts!r}")
        self.address, self.actors, self.cpus_per_actor, self.attempts = address, actors, cpus_per_actor, attempts

    def pool_size(self, ray: Any) -> int:
        """``actors``, else one actor per ``cpus_per_actor`` CPUs of the cluster (at least one)."""
        if self.actors is not None:
            return self.actors
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_actor))

    def __call__(self, task: Any, items: Sequence[Any], emit: Any, *, batch_size: int = defaults.BATCH_SIZE,
                 workers: int = 0) -> None:
        ray = connect(self.address)
        pending = {item.key: item for item in items}
        for attempt in range(1, self.attempts + 1):
            todo = [item for item in items if item.key in pending]
            if not todo:
                return
            ds = ray.data.from_items([{"item": ray.cloudpickle.dumps(item)} for item in todo])
            ds = ds.map_batches(_TaskActor, fn_constructor_args=(task,), batch_format="numpy", batch_size=batch_size,
                                num_cpus=self.cpus_per_actor, compute=_pool(ray, min(self.pool_size(ray), len(todo))))
            quiet = _quiet_datasets(ray)
            quiet.__enter__()
            rows = iter(ds.iter_rows())
            try:
                while True:
                    try:
                        row = next(rows)
                    except StopIteration:
                        break
                    except ray.exceptions.RayError as exc:
                        if isinstance(exc, ray.exceptions.UserCodeException) or attempt == self.attempts:
                            raise
                        break  # a lost node the dataset did not survive: the rest again
                    result = pickle.loads(row["result"])
                    if isinstance(result, _Fatal):
                        raise result.error
                    pending.pop(result.key, None)
                    emit(result)
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()
                quiet.__exit__(None, None, None)
        if pending:
            raise RayError(f"{len(pending)} items were not computed after {self.attempts} attempts on the Ray "
                           f"cluster; rerun the same command to finish them")


def predict_files(
    paths: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    formats: Sequence[str] = (defaults.OUTPUT_FORMAT,),
    list_file: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] = "default",
    backend: str = defaults.AUTO,
    precision: str = defaults.PRECISION,
    input_size: Sequence[int] | None = None,
    threads: int | None = None,
    shard: str | None = None,
    overwrite: bool = False,
    strict: bool = False,
    batch_size: int = defaults.BATCH_SIZE,
    progress: bool = False,
    address: str | None = "auto",
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
) -> dict[str, Any]:
    """``fastsal predict PATHS -o OUT --ray ADDRESS`` from Python: maps for image files and folders
    in today's layout (``OUT/<relative path>.png``, ...), computed by a pool of actors on the Ray
    cluster at ``address`` and written by this process, with one manifest; returns the manifest.

    Everything but the computing is the job layer's (:func:`fastsal.jobs.run`): inputs collected
    and named here, ``shard`` (``"i/n"``, ``"auto"``), what is done skipped before anything loads,
    failures recorded (or raised with ``strict``). The inputs must be readable at the same paths
    on every node (a shared filesystem); for object stores use :func:`predict_dataset`.
    ``threads``: engine threads per actor (default: the actor's CPUs, ``cpus_per_actor``).
    """
    from fastsal import batch, jobs

    out = os.fspath(out)
    executor = RayExecutor(address, actors=actors, cpus_per_actor=cpus_per_actor)
    everything = jobs.collect(list(paths), list_file, exclude=out)
    index, count = jobs.shard_spec(shard)
    mine = jobs.shard(everything, index, count)
    kwargs = {"name_or_path": model, "backend": backend, "precision": precision, "threads": threads,
              **({"input_size": tuple(input_size)} if input_size is not None else {})}
    request = {"api": "fastsal.ray.predict_files", **{k: os.fspath(v) if isinstance(v, os.PathLike) else v
                                                       for k, v in kwargs.items() if k != "threads"}}
    return batch.run(None, mine, out, tuple(formats), loader=ActorLoader(kwargs), request=request,
                     overwrite=overwrite, strict=strict, batch_size=batch_size, progress=progress,
                     manifest=jobs.manifest_path(out, index, count), shard_info=(index, count), executor=executor)


def _pool(ray: Any, actors: int | tuple[int, int]) -> Any:
    """Ray Data's actor pool strategy for ``actors`` (a size, or (min, max) to let it scale)."""
    if isinstance(actors, tuple):
        return ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[-1])
    return ray.data.ActorPoolStrategy(size=actors)


@contextlib.contextmanager
def _quiet_datasets(ray: Any) -> Any:
    """No Ray Data progress bars, plans or progress logs on stderr while a command runs (it has its
    own bar); warnings and errors still show."""
    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "print_on_execution_start") if hasattr(ctx, k)}
    logger = logging.getLogger("ray.data")
    level = logger.level
    try:
        for key in saved:
            setattr(ctx, key, False)
        logger.setLevel(logging.WARNING)
        yield
    finally:
        for key, value in saved.items():
            setattr(ctx, key, value)
        logger.setLevel(level)


def _check_outputs(outputs: Iterable[str], map_format: str) -> tuple[str, ...]:
    wanted = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    unknown = [o for o in wanted if o not in ROW_OUTPUTS]
    if unknown or not wanted:
        raise RayError(f"outputs must name some of {', '.join(ROW_OUTPUTS)}; got {list(wanted)!r}")
    if map_format not in MAP_FORMATS:
        raise RayError(f"map_format must be one of {', '.join(MAP_FORMATS)}; got {map_format!r}")
    return wanted


class _Model:
    """A Ray Data callable class: one per actor, holding the model (loaded once, in ``__init__``).

    ``__call__`` turns a batch of rows (``path`` and/or ``bytes`` columns) into result rows; an
    image that cannot be read gives a row with ``error`` set instead of stopping the dataset.
    """

    def __init__(self, load_kwargs: dict[str, Any], row_kwargs: dict[str, Any]) -> None:
        from fastsal.cpu import threads_for
        from fastsal.predict import load

        self.threads = threads_for(_actor_cpus())
        self.predictor = load(**load_kwargs, threads=self.threads)
        self.row_kwargs = row_kwargs

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        from fastsal.images import ImageError

        n = len(next(iter(batch.values()))) if batch else 0
        keep = {k: v for k, v in batch.items() if k != "bytes"}
        rows: list[dict[str, Any]] = [{k: _plain(v[i]) for k, v in keep.items()} for i in range(n)]
        good, xs = [], []
        for i, row in enumerate(rows):
            try:
                source = _source(batch, i)
                small, size = self.predictor.read(source)
            except ImageError as exc:
                row["error"] = str(exc)
                continue
            good.append((row, (int(size[0]), int(size[1]))))
            xs.append(self.predictor.preprocess(small, size))
        for (row, size), log_small in zip(good, self.predictor.small_log_densities(xs) if xs else []):
            row.update(summarise(log_small, size, **self.row_kwargs))
        own = {name: pa.array([row.get(name) for row in rows]) for name in keep}
        made = {name: pa.array([row.get(name) for row in rows], type=kind)
                for name, kind in _row_types(self.row_kwargs["outputs"]).items()}
        return pa.table({**own, **made})


def _row_types(outputs: Sequence[str]) -> dict[str, Any]:
    """The Arrow type of each column :func:`summarise` fills, fixed so that every block (one of
    failures only too) has the same schema and the Parquet files agree."""
    import pyarrow as pa

    types = {"width": pa.int64(), "height": pa.int64(), "error": pa.string()}
    if "peaks" in outputs:
        types["peaks"] = pa.list_(pa.struct([("x", pa.int64()), ("y", pa.int64()), ("probability", pa.float64())]))
    if "grid" in outputs:
        types["grid"] = pa.list_(pa.list_(pa.float64()))
    if "crops" in outputs:
        types["crops"] = pa.list_(pa.struct([("aspect", pa.string()), *((f, pa.int64()) for f in "xywh"),
                                             ("score", pa.float64()), ("scale", pa.float64())]))
    if "map" in outputs:
        types["map"] = pa.binary()
    return types


def _actor_cpus() -> float | None:
    """CPUs Ray granted the calling actor (None outside Ray)."""
    try:
        import ray

        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))
    except Exception:  # noqa: BLE001 - not in a Ray worker: the caller's default
        return None


def _plain(value: Any) -> Any:
    """A numpy scalar from a batch as the Python value Arrow stores."""
    return value.item() if isinstance(value, np.generic) else value


def _source(batch: dict[str, np.ndarray], i: int) -> Any:
    """Row ``i``'s image: its bytes (named by its path in errors) or its path."""
    if "bytes" in batch:
        stream = io.BytesIO(bytes(batch["bytes"][i]))
        stream.name = str(batch["path"][i]) if "path" in batch else f"row {i}"
        return stream
    return str(batch["path"][i])


def summarise(log_small: np.ndarray, size: tuple[int, int], *, outputs: Sequence[str], k: int = 5,
              grid_size: int = 32, aspects: Sequence[Any] = ("16:9",), map_format: str = "png") -> dict[str, Any]:
    """One image's row from the network's log-density: ``width``/``height`` and the ``outputs`` asked
    for (peaks from :func:`fastsal.peaks.fixation_candidates`, the :func:`fastsal.peaks.grid`,
    crops from :func:`fastsal.cropping.crop_boxes` on the network's own map, the map's file bytes)."""
    from fastsal.predict import postprocess

    row: dict[str, Any] = {"width": size[1], "height": size[0]}
    if "crops" in outputs:
        from fastsal.cropping import crop_boxes

        row["crops"] = [c.to_dict() for c in crop_boxes(np.exp(log_small), aspects, image_size=size)]
    if not {"peaks", "grid", "map"} & set(outputs):
        return row
    prob = postprocess(log_small, size)
    if "peaks" in outputs:
        from fastsal.peaks import fixation_candidates

        row["peaks"] = fixation_candidates(prob, k)
    if "grid" in outputs:
        from fastsal.peaks import grid

        row["grid"] = grid(prob, grid_size).tolist()
    if "map" in outputs:
        row["map"] = _map_bytes(prob, map_format)
    return row


def _map_bytes(prob: np.ndarray, fmt: str) -> bytes:
    """The bytes ``fastsal predict --format png|npy`` writes for this map."""
    if fmt == "png":
        from fastsal.files import gray_png
        from fastsal.viewing import to_png

        return gray_png(to_png(prob))
    buf = io.BytesIO()
    np.save(buf, prob)
    return buf.getvalue()


def predict_dataset(
    ds: "ray.data.Dataset | Sequence[str]",
    *,
    outputs: Iterable[str] = ("peaks", "grid", "crops"),
    model: str = "default",
    aspects: Sequence[Any] = ("16:9",),
    k: int = 5,
    grid_size: int = 32,
    map_format: str = "png",
    backend: str = defaults.AUTO,
    precision: str = defaults.PRECISION,
    input_size: Sequence[int] | None = None,
    actors: int | tuple[int, int] = ACTORS,
    cpus_per_actor: float = 1.0,
    batch_size: int = defaults.BATCH_SIZE,
    address: str | None = None,
) -> "ray.data.Dataset":
    """A lazy Ray dataset of one row per input image, computed by a pool of model-holding actors.

    ``ds``: a Ray dataset with a ``path`` column (files every node can read) and/or a ``bytes``
    column (``ray.data.read_binary_files(..., include_paths=True)`` gives both, from any
    filesystem pyarrow reads: ``s3://``, ``gs://``, ``hdfs://``), or a list of paths. Each output row
    keeps the input's columns except ``bytes``, and adds ``width``, ``height``, ``error`` (None, or
    why the image was skipped) and the ``outputs`` asked for: ``peaks`` (list of {x, y,
    probability}), ``grid`` (rows of probability mass, ``grid_size`` cells on the long side),
    ``crops`` (one {aspect, x, y, w, h, score, scale} per aspect), ``map`` (the map's PNG or npy bytes).
    Write it with ``.write_parquet(...)``; nothing runs until the dataset is consumed.

    ``actors``: pool size, or (min, max) to let Ray scale it; each actor takes ``cpus_per_actor``
    CPUs and runs the engine with that many threads. ``address``: the cluster to join when this
    process has not joined one yet (:func:`connect`; default ``RAY_ADDRESS`` or a local cluster).
    """
    from fastsal.cropping import parse_aspects
    from fastsal.peaks import MAX_CANDIDATES, MAX_GRID

    wanted = _check_outputs(outputs, map_format)
    aspect_labels = [a.label for a in parse_aspects(aspects)] if "crops" in wanted else []
    if not (isinstance(k, int) and 0 <= k <= MAX_CANDIDATES):
        raise RayError(f"k must be a whole number in 0..{MAX_CANDIDATES}, got {k!r}")
    if not (isinstance(grid_size, int) and 1 <= grid_size <= MAX_GRID):
        raise RayError(f"grid_size must be a whole number in 1..{MAX_GRID}, got {grid_size!r}")
    pool = _check_pool(actors, cpus_per_actor, batch_size)
    ray = connect(address if address is not None else ("auto" if os.environ.get("RAY_ADDRESS") else "local"))
    if not isinstance(ds, ray.data.Dataset):
        paths = [str(p) for p in ds] if not isinstance(ds, (str, bytes)) else None
        if not paths:
            raise RayError("ds must be a Ray dataset with a 'path' or 'bytes' column, or a non-empty list of paths")
        ds = ray.data.from_items([{"path": p} for p in paths])
    # a Dataset now; isinstance against connect()'s module (typed Any) does not narrow for mypy
    ds = cast("Dataset", ds)
    columns = set(ds.schema().names) if ds.schema() is not None else set()
    if not {"path", "bytes"} & columns:
        raise RayError(f"ds has no 'path' or 'bytes' column (it has: {', '.join(sorted(columns)) or 'none'}); "
                       f"use ray.data.read_binary_files(..., include_paths=True) or from_items([{{'path': ...}}])")
    load_kwargs = {"name_or_path": model, "backend": backend, "precision": precision, "input_size": input_size}
    row_kwargs = {"outputs": wanted, "k": k, "grid_size": grid_size, "aspects": aspect_labels, "map_format": map_format}
    return ds.map_batches(_Model, fn_constructor_args=(load_kwargs, row_kwargs), batch_format="numpy",
                          batch_size=batch_size, num_cpus=cpus_per_actor, compute=_pool(ray, pool))


def _check_pool(actors: Any, cpus_per_actor: Any, batch_size: Any) -> int | tuple[int, int]:
    """The actor pool settings, checked before anything starts on the cluster."""
    sizes = actors if isinstance(actors, tuple) else (actors,)
    if not (1 <= len(sizes) <= 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes)
            and sizes == tuple(sorted(sizes))):
        raise RayError(f"actors must be a whole number >= 1 or (min, max), got {actors!r}")
    if isinstance(cpus_per_actor, bool) or not isinstance(cpus_per_actor, (int, float)) or not cpus_per_actor > 0:
        raise RayError(f"cpus_per_actor must be a number > 0, got {cpus_per_actor!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise RayError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    return actors
