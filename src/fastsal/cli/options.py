"""Option groups several commands share, so each is spelt once."""
from __future__ import annotations

import argparse

from fastsal import defaults
from fastsal.cli.types import _positive_int, _threads, _finite_range, _tta


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=(defaults.AUTO, *defaults.ENGINES), default=defaults.AUTO,
                   help="inference engine (default: auto = the fastest installed that can prepare the model: "
                        + " > ".join(defaults.ENGINES) + ")")
    p.add_argument("--precision", choices=defaults.PRECISIONS, default=defaults.PRECISION,
                   help="fp32 (default: PyTorch's maps on every engine), bf16 (CPUs with AVX512_BF16/AMX, GPUs) "
                        "or int8 (calibrated; openvino/onnxruntime)")
    p.add_argument("--device", default=defaults.DEVICE,
                   help="cpu (default), cuda or cuda:N (runs on PyTorch)")
    p.add_argument("--threads", type=_threads(), default=None, metavar="N", help="CPU threads for the network")
    p.add_argument("--squash", action="store_true",
                   help="resize every image to exactly the input size; by default each keeps its aspect at the "
                        "input size's pixel count (sides multiples of 32), as the models are trained")
    p.add_argument("-v", "--verbose", action="store_true", help="say which engine, precision and weights run")


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="compute on a Ray cluster (pip install 'fastsal[ray]'): HOST:PORT of its head, auto "
                        "($RAY_ADDRESS) or local; this process writes every output and the manifest")
    p.add_argument("--ray-actors", type=_positive_int, default=None, metavar="N",
                   help="with --ray: actors holding the model (default: one per CPU of the cluster)")


def _add_distill_options(p: argparse.ArgumentParser) -> None:
    from fastsal.tta import TTA_HELP

    g = p.add_argument_group("knowledge transfer", "learn from a teacher: stored labels come in through --data "
                                                   "pseudo=LABELS; with --teacher the teacher labels every augmented "
                                                   "view of the --distill-* images on the fly")
    g.add_argument("--teacher", action="append", metavar="T",
                   help=f"a teacher source (repeat for an ensemble): a shipped model name, a checkpoint, an exported "
                        f".onnx/.xml, py:FILE.py:FUNCTION, or the preset {defaults.TEACHER}")
    g.add_argument("--teacher-tta", type=_tta, default=None, metavar="SPEC",
                   help=f"the teacher's test-time augmentation: {TTA_HELP} (default: the preset's, else none)")
    g.add_argument("--distill-images", action="append", metavar="DIR",
                   help="a folder of unlabelled images the teacher labels on the fly (repeatable)")
    g.add_argument("--distill-data", default=None, metavar="NAME[=FOLDER],...",
                   help="datasets whose train images (not fixations) the teacher labels on the fly")
    g.add_argument("--distill-loss", choices=defaults.DISTILL_LOSSES, default=defaults.DISTILL_LOSS,
                   help="loss to teacher densities, stored or on the fly: cross_entropy = H(teacher, student), or "
                        "paper = 0.5 KL + 0.3 BCE + 0.2 (1 - cos) (default: %(default)s)")
    g.add_argument("--mixup", type=_finite_range(0.0, 1.0), default=defaults.MIXUP, metavar="P",
                   help="share of on-the-fly views blending two images with a random weight (default: %(default)s)")


def _add_shard_option(p: argparse.ArgumentParser) -> None:
    """``--shard``, the same for every batch command (read by :func:`fastsal.jobs.shard_spec`)."""
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="process only shard I of N (0-based); auto or auto/N: from a SLURM array, a Kubernetes "
                        "Indexed Job (N, or FASTSAL_SHARD_COUNT) or RANK/WORLD_SIZE (default: RANK/WORLD_SIZE when "
                        "set, else all)")
