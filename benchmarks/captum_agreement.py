"""How closely macattr's linear-path attributions match Captum's, for every approximation method.

    python benchmarks/captum_agreement.py            # about a minute on a 2-core CPU

For random networks in float64 (conv nets with tanh, residual conv nets, MLPs
with a class target) and every Captum ``method``, this compares
``LayerPathConductance`` with ``captum.attr.LayerConductance`` (attributions and
convergence deltas) and ``LayerPathInternalInfluence`` with
``captum.attr.InternalInfluence``, layer by layer, and prints the largest
absolute and relative differences per method.
"""

from __future__ import annotations

import argparse
from typing import Dict, List, Tuple

import torch
from captum.attr import InternalInfluence, LayerConductance
from torch import nn

import macattr
from macattr import LayerPathConductance, LayerPathInternalInfluence, targets
from macattr.paths import QUADRATURES


class Residual(nn.Module):
    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(), nn.Conv2d(channels, channels, 1)
        )
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(h + self.block(h))


def cases(seed: int) -> List[Tuple[str, nn.Module, object, torch.Tensor, object]]:
    """(name, network, forward function, input, target) for one seed, all float64."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    conv = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 6, 3, padding=1), nn.Tanh(),
                         nn.Conv2d(6, 3, 3, padding=1)).double()  # fmt: skip
    residual = Residual().double()
    mlp = nn.Sequential(nn.Linear(5, 8), nn.Softplus(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    image = torch.rand(2, 3, 6, 6, generator=generator, dtype=torch.float64)
    return [
        ("conv", conv, targets.gradient_magnitude(conv), image, None),
        ("residual", residual, targets.output_sum(residual), image, None),
        ("mlp", mlp, mlp, torch.rand(3, 5, generator=generator, dtype=torch.float64), 2),
    ]


def compare(seeds: int, n_steps: int) -> Dict[str, Dict[str, float]]:
    """Per method: layers compared and the largest absolute/relative differences."""
    out: Dict[str, Dict[str, float]] = {m: {"layers": 0, "abs": 0.0, "rel": 0.0, "delta_abs": 0.0} for m in QUADRATURES}
    for seed in range(seeds):
        for _, model, forward, x, target in cases(seed):
            for layer in macattr.candidate_layers(model).values():
                for method in QUADRATURES:
                    ours, delta = LayerPathConductance(forward, layer).attribute(
                        x, target=target, n_steps=n_steps, method=method, return_convergence_delta=True
                    )
                    theirs, their_delta = LayerConductance(forward, layer).attribute(
                        x, target=target, n_steps=n_steps, method=method, return_convergence_delta=True
                    )
                    influence = LayerPathInternalInfluence(forward, layer).attribute(
                        x, target=target, n_steps=n_steps, method=method
                    )
                    their_influence = InternalInfluence(forward, layer).attribute(
                        x, target=target, n_steps=n_steps, method=method
                    )
                    row = out[method]
                    row["layers"] += 1
                    for a, b in ((ours, theirs), (influence, their_influence)):
                        difference = float((a - b).detach().abs().max())
                        row["abs"] = max(row["abs"], difference)
                        row["rel"] = max(row["rel"], difference / max(float(b.abs().max()), 1e-300))
                    row["delta_abs"] = max(row["delta_abs"], float((delta - their_delta).detach().abs().max()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = compare(args.seeds, args.n_steps)
    print(f"{'method':18s} {'layers':>6s} {'max |diff|':>11s} {'max rel':>9s} {'max |delta diff|':>16s}")
    for method, row in results.items():
        print(f"{method:18s} {row['layers']:6d} {row['abs']:11.2e} {row['rel']:9.2e} {row['delta_abs']:16.2e}")


if __name__ == "__main__":
    main()
