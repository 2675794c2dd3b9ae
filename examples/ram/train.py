"""One training loop for both stages (mask pre-training, fine-tuning), with atomic checkpoints and resume.

Adam with a cosine schedule from ``lr`` to ``lr_min``. Batch ``t`` is a pure
function of (seed, t), and the checkpoint holds the model, optimiser, schedule and
step, so a run interrupted after step t resumes at t + 1 and ends where an
uninterrupted run would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from macattr._io import write_atomic

Batch = Dict[str, Tensor]


def save_atomic(path: Path, state: dict) -> None:
    """``torch.save`` through a temporary file and a rename."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def train(
    model: nn.Module,
    parameters: Iterable[nn.Parameter],
    batch_at: Callable[[int], Batch],
    loss_of: Callable[[nn.Module, Batch, int], Tensor],
    *,
    steps: int,
    lr: float,
    lr_min: float,
    checkpoint: Path,
    device: torch.device,
    bf16: bool = False,
    save_every: int = 100,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> List[float]:
    """Train ``parameters`` of ``model`` for ``steps`` steps; returns the loss of every step run now.

    batch_at(t) gives batch t on the CPU; loss_of(model, batch on device, t) the loss.
    """
    parameters = list(parameters)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr_min)
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = state["step"]
        log(f"resuming {checkpoint.parent.name} at step {start}/{steps}")
    model.train()
    losses: List[float] = []
    started = time.perf_counter()
    bar = tqdm(range(start, steps), disable=not progress, desc=checkpoint.parent.name, leave=False)
    for step in bar:
        batch = {k: v.to(device) for k, v in batch_at(step).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(model, batch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % save_every == 0 or step + 1 == steps:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "step": step + 1}  # fmt: skip
            save_atomic(checkpoint, state)
    model.eval()
    if losses:
        log(f"{checkpoint.parent.name}: steps {start}-{steps}, loss {losses[0]:.4f} -> {losses[-1]:.4f} "
            f"({time.perf_counter() - started:.1f} s)")  # fmt: skip
    return losses
