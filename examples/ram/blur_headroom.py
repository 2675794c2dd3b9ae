"""How much of the blur test task a linear filter restores: the headroom a network has on blur σ 2.

Fits one K × K filter by least squares on crops of the training photographs, mapping each blurred pixel's
neighbourhood to the clean pixel, twice: for blur σ = 2 only (non-blind: the test's blur) and for σ drawn from
the training range (blind: what a network fine-tuned on the RAM mix of degradations sees). Prints the mean
PSNR over the test tiles of the blurred input and of each filter's output.

With ``--network`` (a pre-trained ``model.pt`` of ``python -m examples.ram``), it also fine-tunes every layer of
that network on blur-only batches, the same two ways, for ``--steps`` steps with the preset's learning rates (``--lr``
sets the peak rate) and the L1 loss, and reports the two networks beside the filters: whether the network can
learn the task when blur is all it sees. Checkpoints and finished networks go to ``--out`` (reruns resume;
other settings are refused).

    python -m examples.ram.blur_headroom                  # 11 × 11 filters, 512 crops: about a minute
    python -m examples.ram.blur_headroom --kernel 5 --crops 64 --json headroom.json
    python -m examples.ram.blur_headroom --network runs/medium/pretrain/model.pt --steps 2000 \
        --out runs/medium/blur_only --threads 1       # two 2000-step fine-tunes: about 16 minutes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from macattr.records import read_record
from macattr.restoration.data import fixed_crops, synthetic_test_set
from macattr.restoration.degradations import gaussian_blur, random_level
from macattr.restoration.evaluate import per_image_quality, restore
from macattr.restoration.images import photographs, random_crop
from macattr.restoration.masking import whole_image_l1
from macattr.restoration.networks import ARCHITECTURES
from macattr.restoration.train import save_atomic, train, write_text
from macattr.seeds import seeded_generator

from . import pipeline
from .presets import PRESETS, preset
from .records import finished

CHUNK = 64  # crops per least-squares chunk: (64 · 3 · 32²) rows × K² columns in float64
MAX_KERNEL = 31  # a chunk's rows then take 1.5 GB


def neighbourhoods(images: Tensor, kernel: int) -> Tensor:
    """Every pixel's ``kernel × kernel`` neighbourhood (reflect padding), per channel: (N · 3 · H · W, kernel²)."""
    n, channels, height, width = images.shape
    padded = F.pad(images.reshape(n * channels, 1, height, width), (kernel // 2,) * 4, mode="reflect")
    return F.unfold(padded, kernel).transpose(1, 2).reshape(-1, kernel * kernel).double()


def fit_filter(clean: Tensor, blur: Callable[[Tensor, int], Tensor], kernel: int) -> Tensor:
    """Least-squares filter (kernel²,) from ``blur(crop (1, 3, H, W), index)`` to the clean crop, over ``clean``
    (N, 3, H, W); the normal equations are summed chunk by chunk so that memory stays flat in N."""
    gram = torch.zeros(kernel * kernel, kernel * kernel, dtype=torch.float64)
    moment = torch.zeros(kernel * kernel, dtype=torch.float64)
    for first in range(0, len(clean), CHUNK):
        part = clean[first : first + CHUNK]
        blurred = torch.cat([blur(part[i : i + 1], first + i) for i in range(len(part))])
        rows = neighbourhoods(blurred, kernel)
        gram += rows.T @ rows
        moment += rows.T @ part.reshape(-1).double()
    return torch.linalg.solve(gram, moment)


def apply_filter(weights: Tensor, images: Tensor, kernel: int) -> Tensor:
    """``images`` (N, 3, H, W) filtered with ``weights`` (kernel²,), clamped to [0, 1]; CHUNK images at a time."""
    parts = [(neighbourhoods(part, kernel) @ weights).reshape(part.shape) for part in images.split(CHUNK)]
    return torch.cat(parts).clamp(0.0, 1.0).float()


def blur_batch(photos: List[Tensor], size: int, batch: int, sigma: Optional[float], seed: int,
               step: int) -> Dict[str, Tensor]:  # fmt: skip
    """Training batch ``step``, ``{"lq", "gt"}`` (B, 3, size, size): random crops of ``photos`` blurred with
    σ = ``sigma``, or each with σ drawn from the training range when ``sigma`` is None."""
    generator = seeded_generator(seed, "blur", step)
    picks = torch.randint(len(photos), (batch,), generator=generator).tolist()
    clean = torch.stack([random_crop(photos[i], size, generator) for i in picks])
    levels = [random_level("blur", generator) if sigma is None else sigma for _ in picks]
    return {"lq": torch.cat([gaussian_blur(clean[i : i + 1], level) for i, level in enumerate(levels)]), "gt": clean}


def network_on_blur(run: pipeline.Run, weights: Path, sigma: Optional[float], steps: int, test: Tensor) -> Tensor:
    """The network ``weights`` fine-tuned (every layer, L1, the preset's batch, crop size and learning rates)
    for ``steps`` steps on blur-only batches, applied to ``test`` (N, 3, H, W); the network is kept in
    OUT/sigma<σ>|blind/model.pt and resumed from its checkpoint there."""
    cfg = run.preset.finetune
    size, batch = run.architecture.size, run.preset.batch
    folder = run.out / ("blind" if sigma is None else f"sigma{sigma:g}")
    final = folder / "model.pt"
    made_with = {"pretrained": read_record(weights) or {"file": str(weights.resolve())}, "sigma": sigma,
                 "steps": steps, "lr": cfg.lr, "lr_min": cfg.lr_min, "size": size, "batch": batch,
                 "seed": run.seed}  # fmt: skip
    if finished(final, made_with):
        return restore(pipeline.load_model(run, final), test, run.device, batch=16)
    model = pipeline.load_model(run, weights)
    photos = photographs("train")
    train(model, model.parameters(), lambda step: blur_batch(photos, size, batch, sigma, run.seed, step),
          whole_image_l1, steps=steps, lr=cfg.lr, lr_min=cfg.lr_min, checkpoint=folder / "checkpoint.pt",
          device=run.device, progress=run.progress, log=run.log, name=folder.name)  # fmt: skip
    save_atomic(final, model.state_dict())
    return restore(model, test, run.device, batch=16)


def headroom(kernel: int, crops: int, size: int, seed: int, network: Optional[pipeline.Run] = None,
             weights: Optional[Path] = None, steps: int = 0) -> Dict[str, float]:  # fmt: skip
    """Mean PSNR (dB) over the blur2 test tiles of the input, the non-blind and blind linear filters and, with
    ``network`` and ``weights``, the network fine-tuned for ``steps`` steps on blur σ 2 and on blind blur."""
    test = synthetic_test_set("blur2", photographs("test"), size, seed)
    clean = fixed_crops(photographs("train"), 32, crops, seed)
    generator = seeded_generator(seed, "blur levels", crops)
    levels = [random_level("blur", generator) for _ in range(crops)]
    filters = {
        "non-blind linear filter (sigma 2)": fit_filter(clean, lambda crop, _: gaussian_blur(crop, 2.0), kernel),
        "blind linear filter (sigma 0.1-3.1)": fit_filter(
            clean, lambda crop, i: gaussian_blur(crop, levels[i]), kernel
        ),
    }
    psnr: Dict[str, float] = {"input": float(np.mean(per_image_quality(test["lq"], test["gt"])["psnr"]))}
    for name, taps in filters.items():
        restored = apply_filter(taps, test["lq"], kernel)
        psnr[name] = float(np.mean(per_image_quality(restored, test["gt"])["psnr"]))
    if network is not None and weights is not None:
        for sigma, name in ((2.0, "non-blind"), (None, "blind")):
            restored = network_on_blur(network, weights, sigma, steps, test["lq"])
            label = f"{name} network, all layers, {steps} blur-only steps"
            psnr[label] = float(np.mean(per_image_quality(restored, test["gt"])["psnr"]))
    return psnr


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.ram.blur_headroom", description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", type=int, default=11, help="filter size, odd (default 11)")
    parser.add_argument("--crops", type=int, default=512, help="32 × 32 training crops to fit on (default 512)")
    parser.add_argument("--size", type=int, default=48, help="test tile size, as the presets' evaluation (48)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--network", type=Path, help="a pre-trained model.pt of the pipeline, fine-tuned on blur alone")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="medium", help="the network's preset (medium)")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="swinir", help="the network (swinir)")
    parser.add_argument("--steps", type=int, default=2000, help="blur-only fine-tuning steps (default 2000)")
    parser.add_argument("--lr", type=float,
                        help="peak learning rate of the blur-only fine-tuning (default: the preset's fine-tuning rate; "
                        "the cosine schedule still ends at the preset's final rate)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="with --network: folder for the fine-tuned networks (required)")
    args = parser.parse_args(argv)
    if not (1 <= args.kernel <= MAX_KERNEL and args.kernel % 2 == 1):
        parser.error(f"--kernel must be an odd number from 1 to {MAX_KERNEL}, got {args.kernel}")
    if args.crops < 1:
        parser.error(f"--crops must be >= 1, got {args.crops}")
    if args.size < 16:
        parser.error(f"--size must be >= 16 (the blur's kernel is 15 × 15), got {args.size}")
    if args.network is not None and not args.network.is_file():
        parser.error(f"--network must be a model.pt file, got {args.network}")
    if args.network is not None and args.out is None:
        parser.error("--network needs --out, the folder for the fine-tuned networks")
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    settings = preset(args.preset)
    if args.lr is not None:
        try:
            settings = settings.with_finetune_lr(args.lr, "--lr")
        except ValueError as error:
            parser.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    network = None
    if args.network is not None:
        network = pipeline.Run(out=args.out, arch=args.arch, preset=settings, device=torch.device("cpu"),
                               seed=args.seed, progress=False)  # fmt: skip
    try:
        psnr = headroom(args.kernel, args.crops, args.size, args.seed, network, args.network, args.steps)
    except ValueError as error:  # weights that do not fit --preset/--arch, or --out made with other settings
        print(f"python -m examples.ram.blur_headroom: error: {error}", file=sys.stderr)
        return 2
    for name, value in psnr.items():
        gain = f"  ({value - psnr['input']:+.2f} dB)" if name != "input" else ""
        print(f"{name:52s} {value:7.3f} dB{gain}")
    if args.json:
        settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        write_text(args.json, json.dumps({"settings": settings, "psnr": psnr}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
