"""The memory model of a pass against the real peak: what ``rank_layers`` predicts from its first pass
(``macattr.memory.PassMemory``) and the peak resident memory the ranking reaches above the model's weights.

    python benchmarks/bench_memory.py --json docs/bench/memory_model.json     # ~10 min on 2 cores

Each case runs in its own process; its peak is the kernel's high-water mark of resident memory (``VmHWM``),
reset just before the ranking (``/proc/self/clear_refs``), minus the resident memory at that moment (the
model, its input and the interpreter), once with glibc's default allocator and once with freed memory
returned to the system at once (``MALLOC_MMAP_THRESHOLD_=131072``), which the live tensors bound. The
prediction is the largest ``PassMemory.peak(steps)`` any sweep of the ranking reported. Cases: the
SwinIR-style network of the benchmarks (dim 60, 4 × 6 blocks, 2 images of 48 × 48), a ResNet-18 (width 64,
8 images of 64 × 64, class 0's logit), each with the automatic grid points per pass and with 4 per pass; and
the 0.5B Llama of ``bench_llm_scale.py`` (float32, one sequence of 256 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
from resumable import write_results

from bench_networks import NETWORKS
from macattr import rank_layers
from macattr.engine import planning_passes

CASES = ["swinir:auto", "swinir:4", "resnet18:auto", "resnet18:4", "llama-0.5b:auto"]
N_STEPS = 8


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # kB


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the high-water mark of resident memory starts again from now


def _case(network: str) -> Tuple[torch.nn.Module, List[Any], Dict[str, Any]]:
    """The model, its batches and the options of ``rank_layers`` for one network."""
    generator = torch.Generator().manual_seed(0)
    if network == "llama-0.5b":
        from bench_llm_scale import _model_and_batch

        from macattr.baselines import token_embedding

        model, embeddings, labels = _model_and_batch("0.5b", torch.float32)
        options = dict(target="label", input_name="inputs_embeds", mask_dims="sequence",
                       baselines=token_embedding(model, 0), rule="trapezoid")  # fmt: skip
        return model, [(embeddings, labels)], options
    build, kind = NETWORKS[network]
    torch.manual_seed(0)
    model = build(False).eval()
    images, side = (2, 48) if network == "swinir" else (8, 64)
    x = torch.rand(images, 3, side, side, generator=generator)
    return model, [x], ({"target": 0} if kind == "class" else {})


def measure(case: str) -> Dict[str, Any]:
    """One case in this process: predicted and measured peak above the weights, in bytes."""
    network, steps = case.split(":")
    model, batches, options = _case(network)
    if steps != "auto":
        options["internal_batch_size"] = int(steps) * batches[0][0].shape[0] if network == "llama-0.5b" else (
            int(steps) * batches[0].shape[0])  # fmt: skip
    reports: List[Tuple[int, int, Dict[str, int]]] = []

    def heard(memory: Any, chosen: int) -> None:
        reports.append((memory.peak(chosen), chosen, {"activations_per_point": memory.activations_per_point,
                                                      "sums": memory.sums, "images": memory.images}))  # fmt: skip

    before = _status_bytes("VmRSS")
    _reset_peak()
    with planning_passes(report=heard):
        scores = rank_layers(model, batches, n_steps=N_STEPS, progress=False, seed=0, **options)
    measured = _status_bytes("VmHWM") - before
    predicted, chosen, parts = max(reports)
    return {"layers": len(scores), "steps_per_pass": chosen, "predicted_bytes": predicted,
            "measured_bytes": measured, "relative_error": (predicted - measured) / measured, **parts}  # fmt: skip


def _in_subprocess(case: str, threads: int, returned: bool) -> Dict[str, Any]:
    """``case`` in a fresh process; ``returned``: with glibc's mmap threshold fixed at 128 KiB, so that freed
    blocks go back to the system and the peak is close to the live tensors' (glibc's default raises the
    threshold as blocks are freed, and keeps later freed memory in the process)."""
    command = [sys.executable, __file__, "--threads", str(threads), "--one", case]
    environment = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)} if returned else {})}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(runs: Dict[str, Dict[str, Any]]) -> str:
    mib: Callable[[int], str] = lambda count: f"{count / 2**20:.0f}"  # noqa: E731
    rows = ["| network | grid points per pass | layers | per grid point (MiB) | running sums (MiB) | predicted (MiB) "
            "| measured, glibc default (MiB) | error | measured, freed memory returned (MiB) | error |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for case, pair in runs.items():
        run, returned = pair["default"], pair["returned"]
        rows.append(f"| {case.split(':')[0]} | {run['steps_per_pass']} | {run['layers']} | "
                    f"{mib((run['predicted_bytes'] - run['sums']) // run['steps_per_pass'])} | {mib(run['sums'])} | "
                    f"{mib(run['predicted_bytes'])} | "
                    f"{mib(run['measured_bytes'])} | {run['relative_error']:+.1%} | "
                    f"{mib(returned['measured_bytes'])} | {returned['relative_error']:+.1%} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {CASES}")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # one case, in a subprocess
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(measure(args.one)))
        return
    results: Dict[str, Any] = {"n_steps": N_STEPS, "torch": torch.__version__, "threads": args.threads,
                               "machine": platform.processor() or platform.machine(), "runs": {}}  # fmt: skip
    for case in args.cases.split(","):
        results["runs"][case] = {"default": _in_subprocess(case, args.threads, returned=False),
                                 "returned": _in_subprocess(case, args.threads, returned=True)}  # fmt: skip
        print(case, json.dumps(results["runs"][case]), flush=True)
        write_results(args.json, results)
    print(_table(results["runs"]))


if __name__ == "__main__":
    main()
