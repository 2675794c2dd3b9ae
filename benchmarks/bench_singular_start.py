"""Starts at which a normalisation layer is singular, and what the certificate says there: a Llama-style model
from the zero vector and from the pad token's embedding, a ConvNeXt from a zero patch and from the mean colour.

    python benchmarks/bench_singular_start.py --json docs/bench/singular_start.json

Llama: 4 layers, hidden 64, random weights (seed 0), float64, 4 sequences of 16 tokens masked whole, the logit
of token 5 at position 15; each start's reference is the trapezoid at N = 3200 on the same start and path (the
sigmoid mask, or the ramp that reveals one token after another linearly). ConvNeXt:
Hugging Face's, hidden sizes 16-32-64-128, random weights (seed 0), float64, two 32 × 32 photograph crops,
patches of 4 × 4, class 0's logit; on the ramp its reference is the segment rule gauss4 at N = 1024 (5121
passes; the trapezoid does not converge there). Segment rules (``gauss<m>``) take N (m + 1) + 1 passes.
For every run: the largest true relative error (Llama), the certificate's
largest estimate, how many layers it understates, the largest completeness gap at the input, and whether the
singular-start warning came.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional

import torch
from resumable import run_once

from bench_networks import tiny_llama
from macattr import LayerScores, rank_layers
from macattr.baselines import mean_colour, token_embedding
from macattr.restoration.images import sample_images


def _llama() -> tuple:
    model = tiny_llama()
    ids = torch.randint(1, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    options = dict(input_name="inputs_embeds", mask_dims="sequence", target=(15, 5))
    return model, model.get_input_embeddings()(ids).detach(), options


def _convnext() -> tuple:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_channels=3, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1], num_labels=10,
                            image_size=32)  # fmt: skip
    torch.manual_seed(0)
    model = ConvNextForImageClassification(config).eval().double()
    return model, torch.stack(sample_images(32)[:2]).double(), dict(target=0, patch_size=4)


def _ranked(model, x, options: Dict[str, Any], baseline, rule: str, n: int, ramp: bool = False) -> tuple:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = rank_layers(model, [x], n_steps=n, rule=rule, baselines=baseline, seed=0, progress=False,
                             ramp=ramp, **options)  # fmt: skip
    return scores, any("singular" in str(w.message) for w in caught)


def _row(scores: LayerScores, singular: bool, reference: Optional[LayerScores]) -> Dict[str, Any]:
    certificate = scores.certificate()
    row = {"max_estimate": certificate.worst_error, "input_gap": certificate.worst_gap,
           "singular_warning": singular, "trusted": certificate.trusted}  # fmt: skip
    if reference is not None:
        largest = max(abs(v) for v in reference.values())
        counted = [n for n in reference if abs(reference[n]) >= 1e-6 * largest]
        row["max_error"] = max(abs(scores[n] - reference[n]) / abs(reference[n]) for n in counted)
        row["understated"] = sum(
            scores.error(n) < abs(scores[n] - reference[n]) - 1e-9 * abs(reference[n]) for n in counted
        )  # below 1e-9: float rounding of a layer every rule gets exactly
        row["layers"] = len(counted)
    return row


def run() -> Dict[str, List[Dict[str, Any]]]:
    results: Dict[str, List[Dict[str, Any]]] = {"llama": [], "convnext": []}
    model, x, options = _llama()
    pad = token_embedding(model, 0)
    runs = {
        ("zero vector", False): [("left", 50), ("trapezoid", 50), ("trapezoid", 200)],
        ("pad token's embedding", False): [("left", 50), ("trapezoid", 50), ("trapezoid", 200), ("gauss2", 66)],
        ("pad token's embedding", True): [
            ("left", 96),
            ("trapezoid", 48),
            ("trapezoid", 96),
            ("trapezoid", 200),
            ("gauss3", 8),
            ("gauss2", 16),
            ("gauss3", 16),
        ],
        ("zero vector", True): [("trapezoid", 96), ("trapezoid", 400), ("gauss3", 16), ("gauss4-graded", 32)],
    }
    for (start, ramp), settings in runs.items():  # each against the trapezoid at N = 3200 on the same path
        baseline = 0.0 if start == "zero vector" else pad
        reference, _ = _ranked(model, x, options, baseline, "trapezoid", 3200, ramp)
        for rule, n in settings:
            scores, singular = _ranked(model, x, options, baseline, rule, n, ramp)
            results["llama"].append({"start": start, "ramp": ramp, "rule": rule, "n_steps": n,
                                     **_row(scores, singular, reference)})  # fmt: skip
            print(results["llama"][-1], flush=True)
    model, x, options = _convnext()
    colour = mean_colour(torch.stack(sample_images(32)).double())
    trapezoids = [("trapezoid", 50), ("trapezoid", 200)]
    for start, baseline, ramp in (("zero patch", 0.0, False), ("mean colour", colour, False),
                                  ("mean colour", colour, True)):  # fmt: skip
        reference = _ranked(model, x, options, baseline, "gauss4", 1024, ramp)[0] if ramp else None
        more = [("gauss3", 32), ("gauss2", 64), ("gauss4", 128), ("gauss4", 512)] if ramp else []
        for rule, n in trapezoids + more:
            scores, singular = _ranked(model, x, options, baseline, rule, n, ramp)
            results["convnext"].append({"start": start, "ramp": ramp, "rule": rule, "n_steps": n,
                                        **_row(scores, singular, reference)})  # fmt: skip
            print(results["convnext"][-1], flush=True)
    return results


def main(argv: Optional[List[str]] = None) -> int:
    return run_once(__doc__.splitlines()[0], run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
