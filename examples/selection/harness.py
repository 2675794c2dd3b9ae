"""One protocol for comparing layer selections at an equal parameter budget, in any domain.

A *domain* ([`Domain`][examples.selection.harness.Domain]) knows its pre-trained network and data: it ranks the
layers by a method on its training split, and fine-tunes a selection at a learning rate and seed, returning one
number per validation or test item (accuracy 0/1, PSNR, ...). The protocol
([`Protocol`][examples.selection.harness.Protocol]) is the same for every domain:

1. every ranking is made once (a random draw once per seed), timed, and its cost in forward/backward passes
   counted (images × N for a path method, images for a gradient method, none for a data-free one);
2. at each parameter budget, every entry (a method and a selection strategy) selects its layers with
   ``top_k(budget, "parameters", strategy=...)``;
3. each entry gets its own learning rate: the one of the grid with the best mean over the validation items
   at seed 0 (the test items are never seen by this choice);
4. at that learning rate, every seed fine-tunes the selection and is scored on the test items;
5. per budget, the *best baseline* is the baseline entry with the highest test mean, and every entry's
   advantage over it is a paired bootstrap interval over the test items (each item's mean over the seeds).

Fine-tunings are cached by (split, selected layers, learning rate, seed) in ``runs_<domain>.json`` beside the results,
written after each one, so an interrupted study resumes and two entries that select the same layers share
their runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union
from typing import Protocol as Interface

import numpy as np
import torch.nn.functional as F

import macattr
from macattr import LayerScores
from macattr.files import write_text_atomic
from macattr.ranking.methods import get_method
from macattr.restoration.evaluate import paired_bootstrap

Plan = Union[None, Sequence[str], Mapping[str, int]]
"""What a fine-tuning trains: every parameter (``None``), the named layers, or LoRA ranks by layer name."""


def _plan_key(plan: Plan) -> Any:
    if plan is None:
        return None
    return sorted(plan.items()) if isinstance(plan, Mapping) else sorted(plan)


class Domain(Interface):
    """What the protocol needs from a domain."""

    name: str
    metric: str  # what ``fine_tune`` returns per item, for the tables ("accuracy (%)", "PSNR (dB)")
    scale: float  # the metric's table unit per returned unit (100 for accuracy as 0/1)

    def rank(self, method: str, seed: int) -> Tuple[LayerScores, int]:
        """The ranking of the adaptable layers by ``method`` on the training split, and its cost in
        forward/backward passes."""

    def fine_tune(self, plan: Plan, lr: float, seed: int, split: str) -> np.ndarray:
        """Fine-tune ``plan`` from the pre-trained network at ``lr`` with ``seed``, and score each item of
        ``split`` ("validation" or "test"): (items,) float."""

    def trainable(self, plan: Plan) -> int:
        """Parameters a fine-tuning of ``plan`` trains."""


@dataclass(frozen=True)
class Protocol:
    """The protocol's settings.

    Attributes:
        budgets: shares of the network's parameters a selection may hold.
        lrs: the learning-rate grid each entry chooses from on the validation split.
        seeds: fine-tuning seeds per entry (a random method draws its layers anew for each).
        entries: (method, strategy) pairs that macattr offers as its selections.
        baselines: (method, strategy) pairs the entries are compared against.
        full: also fine-tune every parameter (the bound, with its own learning rate).
    """

    budgets: Tuple[float, ...] = (0.05, 0.15)
    lrs: Tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    seeds: int = 3
    entries: Tuple[Tuple[str, str], ...] = (("mac", "greedy"), ("mac", "knapsack"), ("mac", "per_parameter"),
                                            ("conductance", "greedy"), ("internal_influence", "greedy"))  # fmt: skip
    baselines: Tuple[Tuple[str, str], ...] = (("gradnorm", "greedy"), ("fisher", "greedy"), ("kappa", "greedy"),
                                              ("random", "greedy"), ("random_blocks", "greedy"), ("first", "greedy"),
                                              ("last", "greedy"), ("uniform", "greedy"))  # fmt: skip
    full: bool = True


@dataclass
class Runs:
    """The cache of fine-tunings: (split, plan, learning rate, seed) → per-item metric, saved after each new
    one."""

    path: Path
    done: Dict[str, List[float]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> Runs:
        return cls(path, json.loads(path.read_text()) if path.exists() else {})

    def get(self, domain: Domain, plan: Plan, lr: float, seed: int, split: str) -> np.ndarray:
        key = json.dumps([split, _plan_key(plan), lr, seed])
        if key not in self.done:
            self.done[key] = [float(v) for v in domain.fine_tune(plan, lr, seed, split)]
            write_text_atomic(self.path, json.dumps(self.done) + "\n")
        return np.asarray(self.done[key])


def rank_classifier(model: Any, batches: List[Any], method: str, n_steps: int, mac_options: Mapping[str, Any],
                    **common: Any) -> Tuple[LayerScores, int]:  # fmt: skip
    """A classifier's ranking by ``method`` on ``(input, label)`` batches, and its cost in forward/backward passes:
    a path method attributes each item's own class (N = ``n_steps``, the trapezoid rule for conductance sums,
    ``mac_options`` for MAC's mask); a gradient method scores cross-entropy; the others read no data."""
    record, items = get_method(method), sum(len(labels) for _, labels in batches)
    if record.uses_path:
        options = {"target": "label", "n_steps": n_steps, **(mac_options if method == "mac" else {})}
        if record.step_rule:
            options["rule"] = "trapezoid"
        return macattr.rank_layers(model, batches, method, **common, **options), items * n_steps
    if record.needs_ground_truth:
        return macattr.rank_layers(model, batches, method, loss=F.cross_entropy, **common), items
    return macattr.rank_layers(model, batches, method, **common), 0


def run(domain: Domain, protocol: Protocol, out: Path, log=print) -> Dict[str, Any]:
    """The whole study of ``domain``; writes OUT/selection_<domain>.json and .md, and OUT/runs_<domain>.json (the
    cache of fine-tunings)."""
    out.mkdir(parents=True, exist_ok=True)
    runs = Runs.open(out / f"runs_{domain.name}.json")
    started = time.perf_counter()
    rankings, costs = _rankings(domain, protocol)
    results: Dict[str, Any] = {"domain": domain.name, "metric": domain.metric, "scale": domain.scale,
                               "protocol": asdict(protocol), "analysis_cost": costs, "budgets": {}}  # fmt: skip
    for budget in protocol.budgets:
        table = {}
        for method, strategy in (*protocol.entries, *protocol.baselines):
            label = method if strategy == "greedy" else f"{method} ({strategy})"
            selections = [rankings[(method, seed)].top_k(budget, "parameters", strategy=strategy)
                          for seed in range(protocol.seeds)]  # fmt: skip
            table[label] = tuned(domain, protocol.lrs, runs, selections)
            table[label]["baseline"] = (method, strategy) in protocol.baselines
            log(
                f"{domain.name} budget {budget:.0%} {label:32s}: lr {table[label]['lr']:g}, test "
                f"{domain.scale * table[label]['mean']:.2f}"
            )
        if protocol.full:
            table["full"] = tuned(domain, protocol.lrs, runs, [None] * protocol.seeds)
            table["full"]["baseline"] = None
        results["budgets"][f"{budget:g}"] = compared(table, domain.scale)
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_text_atomic(out / f"selection_{domain.name}.json", json.dumps(results, indent=1) + "\n")
    write_text_atomic(out / f"selection_{domain.name}.md", markdown(results))
    return results


def _rankings(domain: Domain, protocol: Protocol) -> Tuple[Dict[Tuple[str, int], LayerScores], Dict[str, Any]]:
    """Every method's ranking per seed (one ranking shared by the seeds unless the method is a random draw),
    with its cost."""
    rankings, costs = {}, {}
    for method in dict.fromkeys(m for m, _ in (*protocol.entries, *protocol.baselines)):
        drawn = get_method(method).random_draw
        costs[method] = {"seconds": 0.0, "passes": 0}
        for seed in range(protocol.seeds if drawn else 1):
            started = time.perf_counter()
            rankings[(method, seed)], passes = domain.rank(method, seed)
            costs[method]["seconds"] = round(costs[method]["seconds"] + time.perf_counter() - started, 2)
            costs[method]["passes"] += passes
        if not drawn:  # one ranking serves every seed
            rankings.update({(method, seed): rankings[(method, 0)] for seed in range(1, protocol.seeds)})
    return rankings, costs


def tuned(domain: Domain, lrs: Sequence[float], runs: Runs, selections: Sequence[Plan]) -> Dict[str, Any]:
    """An entry's learning rate (best validation mean at seed 0), then its test items at every seed (one plan
    per seed)."""
    validation = {lr: float(runs.get(domain, selections[0], lr, 0, "validation").mean()) for lr in lrs}
    lr = max(validation, key=validation.get)
    per_seed = [runs.get(domain, names, lr, seed, "test") for seed, names in enumerate(selections)]
    means = [float(items.mean()) for items in per_seed]
    return {"lr": lr, "validation": validation, "mean": float(np.mean(means)), "std": float(np.std(means)),
            "per_seed": means, "per_item": np.mean(per_seed, axis=0).tolist(),
            "trainable": int(np.mean([domain.trainable(names) for names in selections])),
            "layers": selections}  # fmt: skip


def compared(table: Dict[str, Dict[str, Any]], scale: float) -> Dict[str, Any]:
    """The table with the best baseline named and every entry's paired interval against it."""
    best = max((label for label, entry in table.items() if entry["baseline"]), key=lambda label: table[label]["mean"])
    reference = np.asarray(table[best]["per_item"])
    for label, entry in table.items():
        if label != best:
            gap = paired_bootstrap(np.asarray(entry["per_item"]), reference)
            entry["minus_best_baseline"] = {key: scale * value for key, value in gap.items()}
    winners = [label for label, entry in table.items() if entry["baseline"] is False
               and entry["minus_best_baseline"]["low"] > 0]  # fmt: skip
    return {"best_baseline": best, "entries_above_it": winners, "methods": table}


def markdown(results: Dict[str, Any]) -> str:
    """The tables of a study's results."""
    p, scale = results["protocol"], results["scale"]
    lines = [f"Domain `{results['domain']}`: {p['seeds']} seeds, learning rate per entry from {p['lrs']} on the "
             f"validation split, {results['seconds']:.0f} s in all.", "",
             "| method | seconds | forward/backward passes |", "| --- | --- | --- |"]  # fmt: skip
    lines += [f"| {m} | {c['seconds']:.2f} | {c['passes']:,} |" for m, c in results["analysis_cost"].items()]
    for budget, table in results["budgets"].items():
        lines += ["", f"### Budget {100 * float(budget):g} % of the parameters (best baseline: "
                      f"{table['best_baseline']})", "",
                  f"| selection | kind | {results['metric']} | − best baseline (95 % interval) | lr | trainable |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for label, entry in sorted(table["methods"].items(), key=lambda item: -item[1]["mean"]):
            kind = {True: "baseline", False: "macattr", None: "bound"}[entry["baseline"]]
            gap = entry.get("minus_best_baseline")
            delta = "–" if gap is None else f"{gap['mean']:+.2f} [{gap['low']:+.2f}, {gap['high']:+.2f}]"
            lines.append(f"| {label} | {kind} | {scale * entry['mean']:.2f} ± {scale * entry['std']:.2f} | {delta} | "
                         f"{entry['lr']:g} | {entry['trainable']:,} |")  # fmt: skip
    return "\n".join(lines) + "\n"


__all__ = ["Domain", "Plan", "Protocol", "Runs", "compared", "markdown", "rank_classifier", "run", "tuned"]
