"""The RAM authors' analysis, written from their published mask and loop semantics as a plain loop, against
macattr's authors' mode (``RankSettings.ram_code``) on a SwinIR- and a PromptIR-style network."""

from __future__ import annotations

import math
from typing import Dict

import numpy as np
import pytest
import torch
from torch import nn

from macattr import LayerScores, RankSettings, rank_layers, targets
from macattr.ranking.batches import image_seed
from macattr.restoration.networks import PromptIRStyle, SwinIRStyle

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).reshape(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).reshape(1, 3, 1, 1)


def authors_mask(order: np.ndarray, alpha: float, sharpness: float, shape: tuple) -> torch.Tensor:
    """Their mask: with L pixels and the order ``order``, pixel ``order[i]`` is ``σ(k (α − i / L))`` for
    ``i < ⌈L α⌉`` and exactly 0 from there on."""
    count = len(order)
    mask = np.zeros(count)
    shown = int(np.ceil(count * alpha))
    for i in range(shown):
        mask[order[i]] = 1 / (1 + math.exp(-sharpness * (alpha - i / count)))
    return torch.from_numpy(mask).reshape(shape)


def authors_loop(model: nn.Module, image: torch.Tensor, n: int, ratio: float, sharpness: float,
                 seed: int) -> Dict[str, float]:  # fmt: skip
    """Their loop: one image and one grid point per pass, α_j = 1 − r + j r / N for j = 0 … N − 1, the image
    normalised with ImageNet's statistics and multiplied by their mask of a numpy pixel order, a full backward
    pass (parameter gradients too) from the gradient-magnitude target, every module that owns parameters hooked,
    and Σ_{j=1}^{N-1} ∂F/∂y|_{α_j} (y(α_j) − y(α_{j−1})) per neuron; a layer's score is the mean |·|."""
    layers = {n_: m for n_, m in model.named_modules() if n_ and next(m.parameters(recurse=False), None) is not None}
    values: Dict[str, torch.Tensor] = {}
    grads: Dict[str, torch.Tensor] = {}

    def hook(name: str):
        def capture(module, args, output):
            values[name] = output
            output.register_hook(lambda grad: grads.__setitem__(name, grad))

        return capture

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    height, width = image.shape[-2:]
    order = np.random.RandomState(image_seed(seed, 0) % 2**32).permutation(height * width)
    normalised = (image - IMAGENET_MEAN) / IMAGENET_STD
    sums: Dict[str, torch.Tensor] = {}
    previous: Dict[str, torch.Tensor] = {}
    target = targets.gradient_magnitude(model)
    try:
        for j in range(n):
            alpha = 1 - ratio + j * ratio / n
            point = (normalised * authors_mask(order, alpha, sharpness, (height, width))).requires_grad_()
            model.zero_grad()
            target(point).sum().backward()
            for name in layers:
                now = values[name].detach().clone()
                if j >= 1:
                    sums[name] = sums.get(name, 0) + grads[name] * (now - previous[name])
                previous[name] = now
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return {name: float(total.abs().mean()) for name, total in sums.items()}


@pytest.mark.parametrize(
    "build",
    [
        lambda: SwinIRStyle(dim=8, depths=(1, 1), heads=2, window=4),
        lambda: PromptIRStyle(dim=8, blocks=(1, 1, 1), heads=(1, 1, 2)),
    ],  # fmt: skip
    ids=["swinir", "promptir"],
)
def test_the_authors_mode_gives_their_loops_numbers(build) -> None:
    torch.manual_seed(0)
    model = build().double().eval()
    image = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theirs = authors_loop(model, image, n=16, ratio=0.5, sharpness=1e4, seed=3)
    ours = rank_layers(model, [image], settings=RankSettings.ram_code(n_steps=16, seed=3), progress=False)
    shared = [name for name in ours if name in theirs]
    assert len(shared) == len(ours) >= 15
    for name in shared:
        assert ours[name] == pytest.approx(theirs[name], rel=1e-5, abs=1e-12), name
    assert ours.config["rule"] == "right" and ours.config["k_rounding"] == "down"
    path = ours.config["path"]
    assert path["end"] == pytest.approx(1 - 0.5 / 16) and path["order"] == "numpy" and path["cut"] is True


def test_the_authors_mode_rounds_k_down_and_their_grid_never_reaches_the_whole_image() -> None:
    scores = LayerScores({f"l{i}": float(i) for i in range(263)}, "mac", {"k_rounding": "down"})
    assert len(scores.top_k(0.1)) == 26 and len(LayerScores(dict(scores), "mac").top_k(0.1)) == 27
    settings = RankSettings.ram_code(n_steps=200)
    start, end = settings.integration_path().interval()
    assert (start, end) == (0.5, 1 - 0.5 / 200) and settings.n_steps == 199 and settings.normalization()[0][0] == 0.485


def test_the_command_ranks_in_the_authors_mode(tmp_path, monkeypatch, capsys) -> None:
    import json

    from macattr.cli import main

    (tmp_path / "nets.py").write_text("from torch import nn\ndef build():\n    return nn.Sequential(nn.Conv2d(3, 4, 3, "
                                      "padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))\n")  # fmt: skip
    (tmp_path / "data.py").write_text("import torch\ndef batches():\n    return [torch.rand(1, 3, 8, 8)]\n")
    monkeypatch.chdir(tmp_path)
    common = ["rank", "--model", "nets:build", "--loader", "data:batches", "--n-steps", "8", "--no-progress"]
    assert main([*common, "--ram-code"]) == 0
    config = json.loads((tmp_path / "scores.json").read_text())["config"]
    assert config["rule"] == "right" and config["n_steps"] == 7 and config["normalize"][0] == [0.485, 0.456, 0.406]
    assert main([*common, "--ram-code", "--rule", "trapezoid"]) == 2
    assert "normalisation itself; drop --rule" in capsys.readouterr().err
