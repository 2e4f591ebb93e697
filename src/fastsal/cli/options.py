"""Option groups several commands share, so each is spelt once: the model source (--model or
--weights), the engine options, the batch-job options (--shard, --ray, --overwrite, --strict, -q),
the density sigma and knowledge transfer. A command adds the groups in the order its --help lists
them."""
from __future__ import annotations

import argparse

from fastsal import defaults
from fastsal.cli.types import number, positive_int, threads, tta_spec


def add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=(defaults.AUTO, *defaults.ENGINES), default=defaults.AUTO,
                   help="inference engine (default: auto = the fastest installed that can prepare the model: "
                        + " > ".join(defaults.ENGINES) + ")")
    p.add_argument("--precision", choices=defaults.PRECISIONS, default=defaults.PRECISION,
                   help="fp32 (default: PyTorch's maps on every engine), bf16 (CPUs with AVX512_BF16/AMX, GPUs) "
                        "or int8 (calibrated; openvino/onnxruntime)")
    p.add_argument("--device", default=defaults.DEVICE,
                   help="cpu (default), cuda or cuda:N (runs on PyTorch)")
    p.add_argument("--threads", type=threads(), default=None, metavar="N", help="CPU threads for the network")
    p.add_argument("--squash", action="store_true",
                   help="resize every image to exactly the input size; by default each keeps its aspect at the "
                        "input size's pixel count (sides multiples of 32), as the models are trained")
    p.add_argument("--uncalibrated", action="store_true",
                   help="leave out the calibration the weights carry (temperature and centre-bias prior fitted on "
                        "val): the network's own density, e.g. for shuffled AUC, which penalises centre bias")
    p.add_argument("-v", "--verbose", action="store_true", help="say which engine, precision and weights run")


def add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="compute on a Ray cluster (pip install 'fastsal[ray]'): HOST:PORT of its head, auto "
                        "($RAY_ADDRESS) or local; this process writes every output and the manifest")
    p.add_argument("--ray-actors", type=positive_int, default=None, metavar="N",
                   help="with --ray: actors holding the model (default: one per CPU of the cluster)")


def add_distill_options(p: argparse.ArgumentParser) -> None:
    from fastsal.tta import TTA_HELP

    g = p.add_argument_group("knowledge transfer", "learn from a teacher: stored labels come in through --data "
                                                   "pseudo=LABELS; with --teacher the teacher labels every augmented "
                                                   "view of the --distill-* images on the fly")
    g.add_argument("--teacher", action="append", metavar="T",
                   help=f"a teacher source (repeat for an ensemble): a shipped model name, a checkpoint, an exported "
                        f".onnx/.xml, py:FILE.py:FUNCTION, or the preset {defaults.TEACHER}")
    g.add_argument("--teacher-tta", type=tta_spec, default=None, metavar="SPEC",
                   help=f"the teacher's test-time augmentation: {TTA_HELP} (default: the preset's, else none)")
    g.add_argument("--distill-images", action="append", metavar="DIR",
                   help="a folder of unlabelled images the teacher labels on the fly (repeatable)")
    g.add_argument("--distill-data", default=None, metavar="NAME[=FOLDER],...",
                   help="datasets whose train images (not fixations) the teacher labels on the fly")
    g.add_argument("--distill-loss", choices=defaults.DISTILL_LOSSES, default=defaults.DISTILL_LOSS,
                   help="loss to teacher densities, stored or on the fly: cross_entropy = H(teacher, student), or "
                        "paper = 0.5 KL + 0.3 BCE + 0.2 (1 - cos) (default: %(default)s)")
    g.add_argument("--mixup", type=number(float, 0.0, 1.0), default=defaults.MIXUP, metavar="P",
                   help="share of on-the-fly views blending two images with a random weight (default: %(default)s)")


def add_shard_option(p: argparse.ArgumentParser) -> None:
    """``--shard``, the same for every batch command (read by :func:`fastsal.jobs.shard_spec`)."""
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="process only shard I of N (0-based); auto or auto/N: from a SLURM array, a Kubernetes "
                        "Indexed Job (N, or FASTSAL_SHARD_COUNT) or RANK/WORLD_SIZE (default: RANK/WORLD_SIZE when "
                        "set, else all)")


def add_model_source(p: argparse.ArgumentParser, model_help: str, weights_help: str, *,
                     weights_metavar: str | None = "FILE") -> argparse._MutuallyExclusiveGroup:
    """``--model NAME`` (default: the shipped default) or ``--weights FILE``, never both."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default="default", help=model_help)
    which.add_argument("--weights", metavar=weights_metavar, help=weights_help)
    return which


def add_batch_size_option(p: argparse.ArgumentParser) -> None:
    """``--batch-size``: images per forward pass of the model."""
    p.add_argument("--batch-size", type=positive_int, default=defaults.BATCH_SIZE, metavar="N",
                   help=f"images per forward pass (default: {defaults.BATCH_SIZE})")


def add_job_options(p: argparse.ArgumentParser, *, redo: str, strict: str) -> None:
    """A resumable batch job's options: ``--shard``, ``--ray``, ``--overwrite``, ``--strict``, ``-q``."""
    add_shard_option(p)
    add_ray_options(p)
    add_rerun_options(p, redo=redo, strict=strict)


def add_rerun_options(p: argparse.ArgumentParser, *, redo: str, strict: str) -> None:
    """``--overwrite`` (redo what a run already wrote), ``--strict`` (stop at the first bad input), ``-q``."""
    p.add_argument("--overwrite", action="store_true", help=redo)
    p.add_argument("--strict", action="store_true", help=strict)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


#: Sigmas of a fixation density the commands accept: degrees of visual angle, or image pixels.
SIGMA_DEG_RANGE, SIGMA_PX_RANGE = (0.05, 10.0), (0.5, 500.0)


def add_sigma_options(p: argparse.ArgumentParser, *, deg_help: str, px_help: str) -> None:
    """``--sigma-deg`` or ``--sigma-px``: the Gaussian that turns fixations into a density."""
    sig = p.add_mutually_exclusive_group()
    sig.add_argument("--sigma-deg", type=number(float, *SIGMA_DEG_RANGE), default=defaults.SIGMA_DEG, metavar="DEG",
                     help=deg_help)
    sig.add_argument("--sigma-px", type=number(float, *SIGMA_PX_RANGE), default=None, metavar="PX", help=px_help)
