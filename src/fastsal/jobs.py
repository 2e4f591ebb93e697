"""The one job layer: every batch command (maps, crops, labels, videos) is a :class:`Task` run by :func:`run`.

    jobs = collect(["photos/"])                        # inputs, sorted, output stems fixed
    mine = shard(jobs, *shard_spec("1/4"))             # this process's quarter (or SLURM/K8s/torchrun)
    report = run(MapsTask(out, loader=load), mine, manifest=manifest_path(out, 1, 4))

Why one layer: "collect inputs, shard, skip what is done, write atomically, record failures,
write a manifest, stop cleanly on a signal" must behave the same for every command, and a
runner on another engine (a Ray cluster, :mod:`fastsal.ray`) needs one seam, not four.

A task splits the work so that a remote worker can compute and the driver can write:

- an :class:`Item` is a stable ``key`` (the input as the manifest names it), the input and its
  fixed output paths;
- ``task.compute_batch(items)`` returns picklable :class:`Result` objects holding the encoded
  bytes of every output file and the manifest entry; the driver writes the bytes atomically, so a
  remote run is byte-identical to a local one. Locally the same stages run pipelined: decode
  ahead in threads, the network on the calling thread, encode and write behind in threads;
- the model loads lazily, once per process, and never when every item is already done: done-ness
  is decided from the files (and the task's earlier records) before anything loads.

A task that streams its own outputs (videos) sets ``writes_own_outputs`` and implements
:meth:`Task.run_item`; it runs locally only, through the same runner for everything else.

Every command writes one manifest schema, :data:`MANIFEST_FORMAT`; :func:`read_manifest` also
reads the older per-command formats, and :func:`merge_manifests` combines shards' manifests.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar, cast

from fastsal.errors import FastSalError, Terminated
from fastsal.files import JOB_TEMPORARY_AGE_S, atomic_write_bytes, remove_stale_temporaries, write_json
from fastsal.images import IMAGE_SUFFIXES, check_not_empty, find_images
from fastsal.signals import sigterm_raises

MANIFEST_FORMAT = "fastsal-manifest/2"
#: Earlier manifests, still read (:func:`read_manifest`): maps, videos, crops and pseudo-labels.
OLD_FORMATS = {"fastsal-manifest/1": "maps", "fastsal-video-manifest/1": "videos", "fastsal-crops/1": "crops",
               "fastsal-pseudo-labels/1": "labels"}
#: The manifest is rewritten after this many newly finished items or seconds, whichever comes first,
#: so a run killed by SIGKILL loses little to redo.
MANIFEST_EVERY_ITEMS = 32
MANIFEST_EVERY_S = 30.0


class JobError(FastSalError, ValueError):
    """Unusable job input (no images, a bad list file or shard, a manifest); one line naming the fix."""


# -- inputs: collecting, naming, sharding ------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One input and the output stem (relative to the output folder, without suffix) it maps to."""

    source: Path
    stem: Path


def read_list(list_file: str | os.PathLike[str]) -> list[Path]:
    """Paths in a list file: one per line, ``#`` comments and blank lines ignored; relative paths
    are relative to the list file's folder, so a list travels with the data it names."""
    list_file = Path(list_file)
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{list_file}: cannot read list file ({exc}); pass a UTF-8 text file, one path per line") \
            from None
    paths = [Path(ln.strip()) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not paths:
        raise JobError(f"{list_file}: list file names no images; put one image path per line")
    return [p if p.is_absolute() else list_file.parent / p for p in paths]


def collect(
    paths: Iterable[str | os.PathLike[str]], list_file: str | os.PathLike[str] | None = None,
    exclude: str | Path | None = None, suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> list[Job]:
    """Jobs for files and folders (searched recursively, sorted) and the entries of ``list_file``.

    Output stems mirror each input's path below its folder argument; list entries mirror their
    path below the entries' common folder. Folder contents inside ``exclude`` (the output folder:
    earlier outputs are not inputs) are left out. Files in a list need not exist yet: a missing
    one is reported when it is reached, like any unreadable image, so one bad line cannot stop a
    million-image run. Names are fixed from the whole list *before* sharding, so every process
    agrees on which output belongs to which input.
    """
    found: list[tuple[Path, Path]] = []
    excluded = Path(exclude).resolve() if exclude is not None else None
    for raw in paths:
        check_not_empty(raw, "input path")
        arg = Path(raw)
        if not arg.exists():
            raise JobError(f"{arg}: no such file or folder")
        items = find_images([arg], tuple(suffixes))
        if arg.is_dir() and excluded is not None:
            # realpath, not resolve(): a looping link must reach decoding (and be reported), not raise here
            items = [(f, rel) for f, rel in items if not Path(os.path.realpath(f)).is_relative_to(excluded)]
        found += items
    if list_file is not None:
        listed = [p.absolute() for p in read_list(list_file)]
        root = Path(os.path.commonpath([p.parent for p in listed]))
        found += [(p, p.relative_to(root)) for p in listed]
    if not found:
        kinds = "/".join(s.lstrip(".") for s in suffixes)
        where = ", ".join([*map(str, paths), *([str(list_file)] if list_file else [])])
        raise JobError(f"no images found in {where} (looked for {kinds} files)")
    stems = _unique_stems([rel for _, rel in found])
    return [Job(src, stem) for (src, _), stem in zip(found, stems)]


def _unique_stems(rels: list[Path]) -> list[Path]:
    """Output stems mirroring the inputs' relative paths, never two alike.

    ``a/x.jpg`` -> ``a/x``; if ``a/x.jpg`` and ``a/x.png`` both exist they keep their suffix
    (``a/x.jpg``, ``a/x.png``) so neither output overwrites the other; the same relative path
    under two input folders is numbered (``x``, ``x-2``).
    """
    base = [r.with_suffix("") for r in rels]
    counts = Counter(base)
    stems = [r if counts[b] > 1 else b for r, b in zip(rels, base)]
    seen: set[Path] = set()
    result = []
    for stem in stems:
        cand, i = stem, 2
        while cand in seen:
            cand, i = stem.with_name(f"{stem.name}-{i}"), i + 1
        seen.add(cand)
        result.append(cand)
    return result


#: The environment variable that gives a Kubernetes Indexed Job's completion count to ``--shard auto``
#: (Kubernetes sets only the index, ``JOB_COMPLETION_INDEX``; set this from ``spec.completions``).
K8S_COUNT_VARIABLE = "FASTSAL_SHARD_COUNT"


def _int_var(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise JobError(f"environment variable {name}={env[name]!r} is not a whole number; fix or unset it") from None


def _shard_from_env(env: Mapping[str, str], count: int | None) -> tuple[int, int, str] | None:
    """(index, count, where) from a scheduler's variables, or None when none is set. ``count``:
    the N of ``--shard auto/N``, which must agree with a count the environment states."""
    if "SLURM_ARRAY_TASK_ID" in env:  # --array=A-B[:S]: ids A, A+S, .. B
        task = _int_var(env, "SLURM_ARRAY_TASK_ID")
        lo = _int_var(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        step = _int_var(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        if step < 1 or (task - lo) % step:
            raise JobError(f"SLURM_ARRAY_TASK_ID={task} is not on the array's grid (min {lo}, step {step}); "
                           f"check the SLURM_ARRAY_TASK_* variables")
        if "SLURM_ARRAY_TASK_COUNT" in env:
            n = _int_var(env, "SLURM_ARRAY_TASK_COUNT")
        elif "SLURM_ARRAY_TASK_MAX" in env:
            n = (_int_var(env, "SLURM_ARRAY_TASK_MAX") - lo) // step + 1
        elif count is not None:
            n = count
        else:
            raise JobError("SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or _MAX; pass the shard as auto/N")
        i, where = (task - lo) // step, "SLURM_ARRAY_TASK_ID"
    elif "JOB_COMPLETION_INDEX" in env:
        i, where = _int_var(env, "JOB_COMPLETION_INDEX"), "JOB_COMPLETION_INDEX"
        completions = _int_var(env, K8S_COUNT_VARIABLE) if K8S_COUNT_VARIABLE in env else count
        if completions is None:
            raise JobError(f"JOB_COMPLETION_INDEX is set but not the job's completions; pass the shard as auto/N or "
                           f"set {K8S_COUNT_VARIABLE}")
        n = completions
    elif "RANK" in env and "WORLD_SIZE" in env:
        i, n, where = _int_var(env, "RANK"), _int_var(env, "WORLD_SIZE"), "RANK/WORLD_SIZE"
    else:
        return None
    if count is not None and n != count:
        raise JobError(f"shard auto/{count} disagrees with the environment ({where} says {n} shards); "
                       f"pass the same count or plain auto")
    return (*_checked(i, n, where), where)


def shard_spec(text: str | None = None, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(index, count) of this process's shard: the one place that reads every source of it.

    ``text``: ``"i/n"`` (0-based: ``0/2`` and ``1/2``); ``"auto"`` or ``"auto/N"`` read the
    scheduler's environment, the first found of: a SLURM job array (``SLURM_ARRAY_TASK_ID``'s place
    from ``SLURM_ARRAY_TASK_MIN`` by ``_STEP``, of ``SLURM_ARRAY_TASK_COUNT`` or MIN..MAX), a Kubernetes Indexed Job
    (``JOB_COMPLETION_INDEX``, of ``N`` or :data:`K8S_COUNT_VARIABLE`: Kubernetes does not publish
    the count), torchrun's ``RANK`` / ``WORLD_SIZE``; with none of them set it is an error (every
    process would do everything). None (no ``--shard``) reads only ``RANK`` / ``WORLD_SIZE``, as
    before, else ``(0, 1)``: an array task that runs fastsal over its own folder is not split
    unless asked.
    """
    env = os.environ if environ is None else environ
    if text is None:
        if "RANK" in env and "WORLD_SIZE" in env:
            return _checked(_int_var(env, "RANK"), _int_var(env, "WORLD_SIZE"), "RANK/WORLD_SIZE")
        return 0, 1
    spec = str(text).strip()
    if spec.lower().startswith("auto"):
        rest, count = spec[4:], None
        if rest:
            if not rest.startswith("/") or not rest[1:].isdigit() or int(rest[1:]) < 1:
                raise JobError(f"shard must be INDEX/COUNT, auto or auto/COUNT, got {text!r}")
            count = int(rest[1:])
        found = _shard_from_env(env, count)
        if found is None:
            raise JobError(f"shard {text}: none of SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or RANK/WORLD_SIZE is "
                           f"set; pass the shard as INDEX/COUNT")
        return found[0], found[1]
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise JobError(f"shard must be INDEX/COUNT such as 0/4 (0-based), auto or auto/COUNT, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise JobError(f"shard index must be in 0..COUNT-1 (0-based), got {text!r}")
    return i, n


def _checked(i: int, n: int, where: str) -> tuple[int, int]:
    if n < 1 or not 0 <= i < n:
        raise JobError(f"shard index from {where} must be in 0..{n - 1}, got {i}; check the array's range")
    return i, n


def shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """Every ``count``-th job starting at ``index`` (round robin, so folders spread evenly over
    shards): disjoint shards whose union is all jobs."""
    return list(jobs[index::count])


def manifest_path(out: str | Path, index: int = 0, count: int = 1, name: str = "manifest") -> Path:
    """``OUT/<name>.json``, or ``OUT/<name>-<i>-of-<n>.json`` for one of several shards."""
    return Path(out) / (f"{name}.json" if count == 1 else f"{name}-{index}-of-{count}.json")


def input_entry(path: Path | int | str) -> dict[str, Any]:
    """A manifest's ``input`` entry: the path as text that any JSON reader accepts.

    File names are bytes on Linux; one that is not UTF-8 arrives as a str with surrogate escapes,
    which strict UTF-8 JSON readers (other languages, ``jq``) reject. Such names are written with
    the odd bytes as ``\\xNN`` and the exact bytes in ``input_hex``. A camera is ``camera N``.
    """
    if isinstance(path, int):
        return {"input": f"camera {path}"}
    text = str(path)
    try:
        text.encode("utf-8")
        return {"input": text}
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return {"input": raw.decode("utf-8", "backslashreplace"), "input_hex": raw.hex()}


# -- settings bound to an output folder -------------------------------------------------------------

# The settings that change a map's values (the engine does not, within the fp32 contract).
MAP_SETTINGS = ("model", "weights_sha256", "input_size", "aspect", "precision", "blur_sigma", "calibration")


def _records(out: Path, records: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, data) of every readable JSON record matching ``records`` in ``out``."""
    for record in sorted(Path(out).glob(records)):
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable record: nothing known about the outputs; a new one replaces it
        if isinstance(data, dict):
            yield record, data


def check_settings(out: str | Path, settings: dict[str, Any], keys: Sequence[str] = MAP_SETTINGS, *,
                   records: str = "manifest*.json", noun: str = "maps") -> None:
    """Refuse to resume into ``out`` if its records (``records``, a glob in ``out``) say its
    outputs were made with other ``keys`` settings, or by an ``--overwrite`` run that stopped.

    A rerun skips inputs whose outputs exist; if those were made by another model, size,
    precision or blur they would be kept silently beside new ones. One line says what differs
    and that ``--overwrite`` recomputes them (or pick another output folder).
    """
    new = json.loads(json.dumps({k: settings.get(k) for k in keys}))  # tuples -> lists, as read back
    for record, data in _records(Path(out), records):
        old = data.get("settings")
        if not isinstance(old, dict):
            continue
        diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
        if diff:
            raise JobError(f"{out}: holds {noun} made with other settings ({'; '.join(diff)}, see {record.name}); "
                           "pass {option} to recompute them, or choose another output folder", option="overwrite")
        if data.get("overwrite") is True and data.get("complete") is False:
            raise JobError(f"{out}: an {{option}} run stopped before it replaced all earlier {noun} (see "
                           f"{record.name}); pass {{option}} again to finish it, or choose another output folder",
                           option="overwrite")


def bind_settings(out: str | Path, record: str | Path | None, report: dict[str, Any], *, overwrite: bool,
                  keys: Sequence[str] = MAP_SETTINGS, records: str = "manifest*.json", noun: str = "maps") -> None:
    """Check ``out`` against ``report["settings"]`` (:func:`check_settings`, unless ``overwrite``
    or no ``keys``), then write ``report`` to ``record`` before the first output.

    Why: outputs are bound to the settings that made them from the first file on. A run killed
    (even by SIGKILL) before its final record is written still leaves a record naming its model,
    so a rerun with another model is refused instead of keeping the killed run's files as its own.
    ``report`` should say ``"overwrite"`` and ``"complete": False``: an ``--overwrite`` run that
    stops leaves a mix of old and new outputs, and a plain rerun is refused too.
    """
    if not overwrite and keys:
        check_settings(out, report.get("settings") or {}, keys, records=records, noun=noun)
    if record is None:
        return
    try:
        write_json(report, record)
    except OSError as exc:
        raise JobError(f"cannot write {record}: {exc.strerror or exc}; free space or choose another output folder") \
            from None


# -- tasks ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One unit of work: ``key`` (the input as manifests name it), the input, its output stem and
    its fixed output files ({name: path})."""

    key: str
    source: Path | int
    stem: Path
    outputs: dict[str, Path]


@dataclass
class Result:
    """What computing one item gives; picklable, so a remote worker can return it.

    ``files``: {output path: encoded bytes} for the driver to write atomically (empty once written,
    or for a task that writes its own outputs). ``entry``: the manifest entry (``input``, ``outputs``
    and the task's fields). ``error``: a one-line input problem (an unreadable image): recorded
    under ``failed`` and skipped, or raised with ``strict`` (``exception`` is then re-raised).
    """

    key: str
    entry: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None
    exception: BaseException | None = None


#: What a task's :meth:`Task.item` takes: a :class:`Job` for the image tasks, a VideoJob for videos.
JobT = TypeVar("JobT")


def image_source(item: Item) -> Path:
    """An image task's input: its items come from :class:`Job` s, whose source is a Path (only video
    items carry a camera index, which ``Item.source`` allows)."""
    return cast(Path, item.source)


class Task(Generic[JobT]):
    """A batch command as a task definition; subclasses fill in the stages.

    The model comes from ``loader`` (a picklable callable, e.g. ``functools.partial(fastsal.load,
    "default")``), called on first use of :attr:`model`, once per process; or pass a loaded
    ``model``. Pickling a task drops the loaded model, so a task can travel to remote workers.
    """

    kind = "task"                       # the manifest's "task": maps, crops, labels, videos
    noun = "output"                     # for messages: "maps", "crops"
    manifest_name = "manifest"          # OUT/<manifest_name>[-i-of-n].json
    records = "manifest*.json"          # the records in OUT whose settings bind it
    settings_keys: tuple[str, ...] = MAP_SETTINGS  # empty: outputs are not bound to settings
    writes_own_outputs = False
    input_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, out: str | Path, *, model: Any = None, loader: Callable[[], Any] | None = None,
                 request: dict[str, Any] | None = None) -> None:
        if model is None and loader is None:
            raise JobError("a task needs a model or a loader")
        self.out = Path(out)
        self._model, self.loader = model, loader
        #: What the user asked for, cheaply known without loading (model name, weights file, size,
        #: precision...): a rerun whose request equals a finished record's reuses its settings and
        #: loads nothing. None: settings always come from the model.
        self.request = request

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.loader is not None:
            state["_model"] = None  # a worker loads its own
        return state

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self.loader()  # type: ignore[misc]
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    # what every task defines
    def outputs(self, job: Job) -> dict[str, Path]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What shapes the outputs (loads the model)."""
        return dict(self.model.settings())

    def header(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The task's own top-level manifest fields, from ``settings`` (no model needed)."""
        return {}

    def item(self, job: JobT) -> Item:
        # the default, for image tasks (Task[Job]); a task over other jobs overrides it
        image_job = cast(Job, job)
        return Item(input_entry(image_job.source)["input"], image_job.source, image_job.stem,
                    self.outputs(image_job))

    def earlier(self, item: Item) -> dict[str, Any] | None:
        """The manifest entry of an earlier run if ``item`` is done, else None; decided without the
        model. Default: every output file exists."""
        if item.outputs and all(p.is_file() for p in item.outputs.values()):
            return {**input_entry(item.source), "outputs": [str(p) for p in item.outputs.values()]}
        return None

    def prepare(self, items: Sequence[Item]) -> None:
        """Called once before computing, with the items to do (reads earlier records, checks options)."""

    # the compute stages: decode (threads), infer (the model, one thread), encode (threads)
    def decode(self, item: Item) -> Any:
        raise NotImplementedError

    def infer(self, decoded: list[Any]) -> list[Any]:
        raise NotImplementedError

    def encode(self, item: Item, decoded: Any, inferred: Any) -> Result:
        raise NotImplementedError

    def run_item(self, item: Item) -> Result:
        """For ``writes_own_outputs`` tasks: compute and write ``item`` (local only)."""
        raise NotImplementedError

    def failure(self, item: Item, exc: BaseException) -> Result:
        """The result of an input problem: one line, recorded under ``failed``."""
        return Result(item.key, {**input_entry(item.source), "error": str(exc)}, error=str(exc), exception=exc)

    def compute_batch(self, items: Sequence[Item]) -> list[Result]:
        """Decode, infer and encode ``items`` in this thread: what a remote worker runs. Input
        problems come back as failed results; anything else raises."""
        if self.writes_own_outputs:
            raise JobError(f"{self.kind} tasks write their own outputs and run locally only")
        results: dict[int, Result] = {}
        good: list[tuple[int, Any]] = []
        for i, item in enumerate(items):
            try:
                good.append((i, self.decode(item)))
            except self.input_errors as exc:
                results[i] = self.failure(item, exc)
        if good:
            for (i, dec), inf in zip(good, self.infer([d for _, d in good])):
                try:
                    results[i] = self.encode(items[i], dec, inf)
                except self.input_errors as exc:
                    results[i] = self.failure(items[i], exc)
        return [results[i] for i in range(len(items))]

    def compute(self, item: Item) -> Result:
        return self.compute_batch([item])[0]


def write_result(result: Result) -> None:
    """Write a result's files atomically (the driver's half of the split), then forget the bytes."""
    for path, data in result.files.items():
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise JobError(f"cannot write {path}: {exc.strerror or exc}; free space or choose another output folder") from None
    result.files = {}


# -- executors: how the todo items are computed -----------------------------------------------------
#: An executor computes ``items`` and hands every result to ``emit`` on the calling thread, in any
#: order; ``emit`` writes what is not yet written and records it. The local one is the default; a
#: cluster runner (fastsal.ray) is another. Options: ``batch_size``, ``workers``.
Executor = Callable[..., None]


def _ordered(pool: ThreadPoolExecutor | None, fn: Callable[[Any], Any], items: Sequence[Any], ahead: int):
    """``map(fn, items)`` in order, with up to ``ahead`` calls running in ``pool`` in advance."""
    if pool is None:
        yield from map(fn, items)
        return
    queue: deque[Future] = deque()
    it = iter(items)
    for item in it:
        queue.append(pool.submit(fn, item))
        if len(queue) >= ahead:
            break
    while queue:
        result = queue.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            queue.append(pool.submit(fn, nxt))
        yield result


def local_executor(task: Task, items: Sequence[Item], emit: Callable[[Result], None], *, batch_size: int = 8,
                   workers: int = 2) -> None:
    """Compute ``items`` here: ``workers`` threads decode ahead, the network runs on this thread,
    ``workers`` other threads encode and write behind (0: all on this thread).

    Why two pools: a write must never wait behind decodes. After an error or Ctrl-C, results
    already computed are still encoded, written and recorded (each is quick and atomic), so the
    manifest matches the files; queued decodes are cancelled and never waited for (a decode may
    be blocked in a read).
    """
    if task.writes_own_outputs:
        _run_own(task, items, emit)
        return
    readers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastsal-decode") if workers else None
    writers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastsal-write") if workers else None

    def decode(item: Item) -> tuple[Item, Any, BaseException | None]:
        try:
            return item, task.decode(item), None
        except task.input_errors as exc:
            return item, None, exc

    def encode(item: Item, dec: Any, inf: Any) -> Result:
        try:
            result = task.encode(item, dec, inf)
        except task.input_errors as exc:
            return task.failure(item, exc)
        write_result(result)
        return result

    writes: deque[tuple[Item, Future]] = deque()

    def drain(keep: int) -> None:
        while len(writes) > keep:
            emit(writes.popleft()[1].result())

    failed = False
    try:
        decoded = _ordered(readers, decode, items, ahead=2 * batch_size)
        while True:
            chunk = [d for _, d in zip(range(batch_size), decoded)]
            if not chunk:
                break
            good = []
            for item, dec, problem in chunk:
                if problem is None:
                    good.append((item, dec))
                else:
                    emit(task.failure(item, problem))
            if not good:
                continue
            for (item, dec), inf in zip(good, task.infer([d for _, d in good])):
                if writers is None:
                    done: Future = Future()
                    done.set_result(encode(item, dec, inf))
                else:
                    done = writers.submit(encode, item, dec, inf)
                writes.append((item, done))
            drain(keep=4 * batch_size)  # bounded: results waiting to be written hold memory
        drain(keep=0)
    except BaseException:
        failed = True
        raise
    finally:
        if readers is not None:
            readers.shutdown(wait=False, cancel_futures=True)
        if failed:
            _record_written(task, writes, emit)
        if writers is not None:
            writers.shutdown(wait=True)


def _run_own(task: Task, items: Sequence[Item], emit: Callable[[Result], None]) -> None:
    """Items of a task that writes its own outputs (videos), one after another on this thread."""
    for item in items:
        try:
            result = task.run_item(item)
        except task.input_errors as exc:
            result = task.failure(item, exc)
        emit(result)


def _record_written(task: Task, writes: Iterable[tuple[Item, Future]], emit: Callable[[Result], None]) -> None:
    """After an error or Ctrl-C: results already computed are written and recorded, not lost; a
    write that failed too (a full disk) is listed as failed. The error in flight is what the user
    must see, so errors here are only recorded."""
    pending = list(writes)
    wait([fut for _, fut in pending])
    for item, fut in pending:
        error = fut.exception()
        try:
            if error is None:
                emit(fut.result())
            elif isinstance(error, Exception):
                emit(task.failure(item, error))
        except Exception:
            pass


# -- the runner ------------------------------------------------------------------------------------

def now() -> str:
    """UTC time to the microsecond: manifests of one folder are ordered by it."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _settings_from_records(task: Task) -> dict[str, Any] | None:
    """Settings of an earlier record of the same request in ``task.out``, if no record disagrees:
    then a finished job reruns without loading the model."""
    if task.request is None:
        return None
    want = json.loads(json.dumps(task.request))
    found = None
    for _, data in _records(task.out, task.records):
        if not isinstance(data.get("settings"), dict):
            continue
        if data.get("request") != want:
            return None
        found = data["settings"]
    return found


def stopped_by(exc: BaseException) -> str:
    """How a manifest names what stopped a run: ``SIGTERM``, ``Ctrl-C`` or the error's line."""
    if isinstance(exc, Terminated):
        return exc.name
    if isinstance(exc, KeyboardInterrupt):
        return "Ctrl-C"
    return str(exc) or type(exc).__name__


def _plan(task: Task, jobs: Sequence[Any], overwrite: bool, shard_info: tuple[int, int],
          ) -> tuple[dict[str, Any], list[Item], list[tuple[Item, dict[str, Any]]]]:
    """(the manifest as it starts, the items to do, the items kept with their entries).

    What is done is decided first, from the files and earlier records; the model loads (for the
    settings) only if something is left to do or the request differs from the records'.
    """
    from fastsal._version import __version__

    items = [task.item(job) for job in jobs]
    kept: list[tuple[Item, dict[str, Any]]] = []
    todo: list[Item] = []
    for item in items:
        entry = None if overwrite else task.earlier(item)
        if entry is None:
            todo.append(item)
        else:  # done by an earlier run: listed, so `written` covers every output on disk
            kept.append((item, {**entry, "earlier_run": True}))
    settings = None if todo or overwrite else _settings_from_records(task)
    if settings is None:
        settings = task.settings()  # loads the model, unless the job is done and its request unchanged
    report: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "task": task.kind, "fastsal_version": __version__, "shard": list(shard_info),
        "out": str(task.out), "overwrite": overwrite, **task.header(settings), "settings": settings,
        **({"request": task.request} if task.request is not None else {}),
        "assigned": len(items), "skipped_existing": len(kept), "written": [e for _, e in kept], "failed": [],
        "complete": False, "stopped_by": None, "started": now(), "updated": now(),
    }
    return report, todo, kept


def run(
    task: Task[JobT],
    jobs: Sequence[JobT],
    *,
    overwrite: bool = False,
    strict: bool = False,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = True,
    manifest: str | Path | None = None,
    shard_info: tuple[int, int] = (0, 1),
    on_skip: Callable[[str], None] | None = None,
    on_done: Callable[[Item, dict[str, Any], bool], None] | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Run ``task`` over ``jobs`` and return the manifest (also written to ``manifest``, atomically:
    before the first output, every :data:`MANIFEST_EVERY_ITEMS` items or :data:`MANIFEST_EVERY_S`
    seconds, and at the end, also when stopped by an error, Ctrl-C or SIGTERM).

    ``overwrite=False`` keeps items the task finds done (:meth:`Task.earlier`), before any model
    loads. An input problem is recorded under ``failed`` and skipped (``on_skip`` gets the line),
    or raised with ``strict``. ``on_done(item, entry, earlier)`` follows every written or kept
    item. ``executor``: how items are computed (default :func:`local_executor`).
    """
    from tqdm import tqdm

    if not isinstance(batch_size, int) or batch_size < 1:
        raise JobError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    from fastsal.cpu import check_threads

    check_threads(workers, "workers", minimum=0, error=JobError)
    report, todo, kept = _plan(task, jobs, overwrite, shard_info)
    save = (lambda: None) if manifest is None else (lambda: (report.update(updated=now()),
                                                             write_json(report, manifest)))
    _prepare(task, todo, kept, report, manifest, overwrite, on_done)
    bar = tqdm(total=len(todo), unit=task.kind[:-1] or "item", disable=not progress, dynamic_ncols=True)
    emit = _Recorder(report, bar.update, save, strict=strict, on_skip=on_skip, on_done=on_done, todo=todo)
    start = time.perf_counter()
    first_error: BaseException | None = None
    try:
        with sigterm_raises():  # the first SIGTERM unwinds like Ctrl-C; a second cannot break the clean-up
            if todo:
                (executor or local_executor)(task, todo, emit, batch_size=batch_size, workers=workers)
        report["complete"] = True
    except BaseException as exc:
        first_error = exc
        report["stopped_by"] = stopped_by(exc)
        raise
    finally:
        bar.close()
        report["seconds"] = round(time.perf_counter() - start, 3)
        report["finished"] = now()
        try:
            save()
        except OSError as exc:
            if first_error is None:  # the run itself went well: this is the error to report
                raise JobError(f"cannot write {manifest}: {exc.strerror or exc}; free space or choose another "
                               f"output folder") from None
            # otherwise the first error (a full disk, Ctrl-C) is what the user must see
    return report


def _prepare(task: Task, todo: list[Item], kept: list[tuple[Item, dict[str, Any]]], report: dict[str, Any],
             manifest: str | Path | None, overwrite: bool,
             on_done: Callable[[Item, dict[str, Any], bool], None] | None) -> None:
    """Before the first output: the one rule for every command (refuse other settings, record
    ours), leftovers of killed runs removed (ours only), the task's own preparation, and
    ``on_done`` for the items kept from earlier runs."""
    bind_settings(task.out, manifest, report, overwrite=overwrite, keys=task.settings_keys, records=task.records,
                  noun=task.noun)
    for folder in sorted({p.parent for i in todo for p in i.outputs.values()}):
        remove_stale_temporaries(folder, JOB_TEMPORARY_AGE_S)  # leftovers of killed runs: ours only
    task.prepare(todo)
    if on_done is not None:
        for item, entry in kept:
            on_done(item, entry, True)


class _Recorder:
    """The ``emit`` a run hands its executor: each result is written, recorded in the manifest
    (written or failed), reported (``on_skip``, ``on_done``, the progress bar) and the manifest
    saved every :data:`MANIFEST_EVERY_ITEMS` results or :data:`MANIFEST_EVERY_S` seconds."""

    def __init__(self, report: dict[str, Any], advance: Callable[[int], Any], save: Callable[[], Any], *,
                 strict: bool, on_skip: Callable[[str], None] | None,
                 on_done: Callable[[Item, dict[str, Any], bool], None] | None, todo: Sequence[Item]) -> None:
        self.report, self.advance, self.save = report, advance, save
        self.strict, self.on_skip, self.on_done = strict, on_skip, on_done
        self.by_key = {i.key: i for i in todo}
        self.since_save, self.last_save = 0, time.perf_counter()

    def __call__(self, result: Result) -> None:
        write_result(result)
        self.advance(1)
        if result.error is not None:
            self.report["failed"].append(result.entry)
            if self.strict:
                raise result.exception if result.exception is not None else JobError(result.error)
            if self.on_skip is not None:
                self.on_skip(result.error)
        else:
            self.report["written"].append(result.entry)
            if self.on_done is not None and result.key in self.by_key:
                self.on_done(self.by_key[result.key], result.entry, False)
        self.since_save += 1
        if self.since_save >= MANIFEST_EVERY_ITEMS or time.perf_counter() - self.last_save > MANIFEST_EVERY_S:
            self.save()
            self.since_save, self.last_save = 0, time.perf_counter()


def summary(report: dict[str, Any]) -> tuple[int, int, int]:
    """(newly written, failed, already done) of a manifest, for the summary line."""
    written = sum(1 for e in report.get("written", []) if not e.get("earlier_run"))
    return written, len(report.get("failed", [])), int(report.get("skipped_existing", 0))
