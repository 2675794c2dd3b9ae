"""All-layer MAC against a per-layer Captum loop and against the hardware floor, in time and memory.

    python benchmarks/bench_mac.py --quick                 # a few minutes on a 2-core CPU
    python benchmarks/bench_mac.py --json out.json         # the full table
    python benchmarks/bench_mac.py --device cuda --bf16    # on a GPU
    python benchmarks/bench_mac.py --scaling docs/img      # scaling curves (PNG)

Every (network, size, n_steps, method) runs in a fresh process, so peak memory
is that method's own (CPU: peak resident set size above the process's size after
setup; CUDA: ``torch.cuda.max_memory_allocated`` above the allocation after
setup). Time is the best of ``--reps`` runs after one warm-up (a first run longer
than 20 s is taken as it is), and the methods of one configuration run one after
the other.

Methods:
- ``mac``: ``LayerMAC`` over all candidate layers in one call;
- ``linear``: ``LayerPathConductance`` along the linear path, all layers;
- ``floor``: (N + 1) × (forward + backward to the input), one grid point per pass;
- ``captum``: ``captum.attr.LayerConductance`` once per layer with its defaults
  (Gauss-Legendre, all steps in one batch). When that is too slow for every
  layer, a subset evenly spread through depth is timed and the time per layer
  extrapolated linearly to all L layers (column ``captum layers timed``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import macattr  # noqa: E402
from macattr import LayerMAC, LayerPathConductance, targets  # noqa: E402
from networks import NETWORKS  # noqa: E402

METHODS = ("mac", "linear", "floor", "captum")
LONG_RUN_S = 20.0  # a first run this long is timed once: warm-up effects are negligible against it


def _rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _setup(config: Dict[str, Any]):
    torch.manual_seed(0)
    build, kind = NETWORKS[config["network"]]
    device = torch.device(config["device"])
    model = build(config["quick"]).to(device).eval()
    x = torch.rand(config["batch"], 3, config["size"], config["size"], device=device)
    if kind == "image":
        forward, target = targets.gradient_magnitude(model), None
    else:
        forward, target = model, 0
    layers = list(macattr.candidate_layers(model).values())
    return model, forward, target, layers, x


def _floor(forward, target, x: torch.Tensor, n_steps: int) -> None:
    for alpha in torch.linspace(0, 1, n_steps + 1).tolist():
        point = (alpha * x).requires_grad_()
        out = forward(point)
        out = out if target is None else out[:, target]
        torch.autograd.grad(out.sum(), point)


def _run_method(config: Dict[str, Any], forward, target, layers, x) -> int:
    """Run one method once; return how many layers it covered."""
    method, n_steps, ibs = config["method"], config["n_steps"], config.get("internal_batch_size")
    if method == "mac":
        LayerMAC(forward, layers).attribute(x, target=target, n_steps=n_steps, seed=0, internal_batch_size=ibs)
        return len(layers)
    if method == "mac_one":
        LayerMAC(forward, layers[len(layers) // 2]).attribute(x, target=target, n_steps=n_steps, seed=0)
        return 1
    if method == "linear":
        LayerPathConductance(forward, layers).attribute(x, target=target, n_steps=n_steps, internal_batch_size=ibs)
        return len(layers)
    if method == "floor":
        _floor(forward, target, x, n_steps)
        return len(layers)
    if method == "captum":
        from captum.attr import LayerConductance

        for layer in config["captum_chosen"]:
            LayerConductance(forward, layers[layer]).attribute(
                x, target=target, n_steps=n_steps, internal_batch_size=config.get("captum_internal_batch_size")
            )
        return len(config["captum_chosen"])
    raise ValueError(f"unknown method {method!r}")


def _captum_layers(forward, target, layers, x, count: int) -> List[int]:
    """``count`` layer indices spread evenly through depth on which Captum's LayerConductance runs.

    Captum needs the batch as a layer output's first dimension; window-attention
    layers ((B · windows, n, C)) make it fail, so such layers are skipped.
    """
    from captum.attr import LayerConductance

    spread = sorted(range(len(layers)), key=lambda i: min(abs(i - round(k * (len(layers) - 1) / max(count - 1, 1)))
                                                         for k in range(count)))  # fmt: skip
    chosen: List[int] = []
    for index in spread:
        try:
            LayerConductance(forward, layers[index]).attribute(x, target=target, n_steps=2)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            continue
        chosen.append(index)
        if len(chosen) == count:
            break
    return chosen


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker(config: Dict[str, Any]) -> Dict[str, Any]:
    """Measure one (network, size, n_steps, method) in this process: peak memory of the first run, best time."""
    torch.set_num_threads(config["threads"])
    model, forward, target, layers, x = _setup(config)
    if config["method"] == "captum":
        config["captum_chosen"] = _captum_layers(forward, target, layers, x, config["captum_layers"])
    cuda = config["device"].startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and config["bf16"])
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    with autocast:
        started = time.perf_counter()
        out_of_memory = False
        try:
            covered = _run_method(config, forward, target, layers, x)
        except torch.OutOfMemoryError:
            if config["method"] != "captum":
                raise
            out_of_memory = True  # retried below, once the traceback no longer holds the tensors
        if out_of_memory:
            # Captum's default puts all N + 1 grid points in one batch; on OOM, 32 rows per pass instead
            torch.cuda.empty_cache()
            config["captum_internal_batch_size"] = 32 * x.shape[0]
            torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            covered = _run_method(config, forward, target, layers, x)
        _sync(config["device"])
        times = [time.perf_counter() - started]
        peak = (
            torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        ) - base
        for _ in range(config["reps"] if times[0] < LONG_RUN_S else 0):
            started = time.perf_counter()
            _run_method(config, forward, target, layers, x)
            _sync(config["device"])
            times.append(time.perf_counter() - started)
    best = min(times[1:]) if len(times) > 1 else times[0]
    return {"time_s": best, "peak_mb": max(peak, 0) / 2**20, "layers_covered": covered, "layers": len(layers),
            "captum_internal_batch_size": config.get("captum_internal_batch_size")}  # fmt: skip


def measure(config: Dict[str, Any]) -> Dict[str, Any]:
    """Run :func:`worker` in a fresh Python process."""
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(config)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker failed for {config}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def plan(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The configurations to measure: per network, its input sizes and the step counts."""
    sizes = {"dncnn": [32] if args.quick else [32, 64], "swinir-small": [32] if args.quick else [32, 64],
             "swinir": [64], "resnet18": [32]}  # fmt: skip
    if args.device.startswith("cuda"):
        sizes.update(dncnn=[64, 128])
    steps = args.steps or ([32] if args.quick else [32, 200])
    rows = []
    for network in args.networks:
        for size in sizes[network]:
            for n_steps in steps:
                rows.append(dict(network=network, size=size, n_steps=n_steps, batch=args.batch))
    return rows


def run_row(row: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    common = dict(row, device=args.device, quick=args.quick, threads=args.threads, bf16=args.bf16,
                  captum_layers=args.captum_layers, reps=args.reps)  # fmt: skip
    results = {method: measure(dict(common, method=method)) for method in METHODS}
    layers = results["mac"]["layers"]
    captum = results["captum"]
    captum_all = captum["time_s"] * layers / captum["layers_covered"]
    return dict(
        row,
        layers=layers,
        mac_s=results["mac"]["time_s"],
        linear_s=results["linear"]["time_s"],
        floor_s=results["floor"]["time_s"],
        captum_s=captum_all,
        captum_layers_timed=captum["layers_covered"],
        captum_internal_batch_size=captum["captum_internal_batch_size"],
        speedup=captum_all / results["mac"]["time_s"],
        speedup_target=0.8 * layers,
        floor_ratio=results["mac"]["time_s"] / results["floor"]["time_s"],
        mac_mb=results["mac"]["peak_mb"],
        floor_mb=results["floor"]["peak_mb"],
        captum_mb=captum["peak_mb"],
    )


def memory_rows(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Peak memory of all-layer MAC at n_steps = 8 and 200 (each in a fresh process)."""
    out = []
    for network in args.networks:
        size = 32 if not args.device.startswith("cuda") else 64
        common = dict(network=network, size=size, batch=args.batch, device=args.device, quick=args.quick,
                      threads=args.threads, bf16=args.bf16, captum_layers=1, reps=0, method="mac")  # fmt: skip
        low, high = (measure(dict(common, n_steps=n)) for n in (8, 200))
        out.append(dict(network=network, size=size, mb_8=low["peak_mb"], mb_200=high["peak_mb"],
                        ratio=high["peak_mb"] / max(low["peak_mb"], 1e-9)))  # fmt: skip
    return out


def batch_size_rows(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """GPU: all-layer MAC through the SwinIR-style network at 64×64 for several grid points per pass."""
    common = dict(network="swinir", size=64, batch=args.batch, n_steps=200, device=args.device, quick=args.quick,
                  threads=args.threads, bf16=args.bf16, captum_layers=1, reps=args.reps)  # fmt: skip
    floor = measure(dict(common, method="floor"))
    out = []
    for steps in (1, 4, 16, 64, None):
        ibs = None if steps is None else steps * args.batch
        try:
            result = measure(dict(common, method="mac", internal_batch_size=ibs))
        except RuntimeError as error:  # out of memory at this pass size
            print(f"grid points per pass {steps}: failed ({str(error).splitlines()[-1]})")
            continue
        ratio = result["time_s"] / floor["time_s"]
        label = "auto" if steps is None else steps
        out.append(dict(steps_per_pass=label, mac_s=result["time_s"], floor_s=floor["time_s"], ratio=ratio,
                        mac_mb=result["peak_mb"]))  # fmt: skip
    return out


ROW_HEADER = (
    f"{'network':9s} {'L':>4s} {'size':>4s} {'N':>4s} {'MAC s':>8s} {'linear s':>8s} {'floor s':>8s} "
    f"{'Captum s':>9s} {'timed':>5s} {'speed-up':>8s} {'0.8L':>6s} {'MAC/floor':>9s} "
    f"{'MAC MB':>7s} {'floor MB':>8s} {'Captum MB':>9s}"
)


def format_row(r: Dict[str, Any]) -> str:
    timed = str(r["captum_layers_timed"]) + ("*" if r["captum_internal_batch_size"] else "")
    return (
        f"{r['network']:9s} {r['layers']:4d} {r['size']:4d} {r['n_steps']:4d} {r['mac_s']:8.2f} "
        f"{r['linear_s']:8.2f} {r['floor_s']:8.2f} {r['captum_s']:9.2f} {timed:>5s} {r['speedup']:8.1f} "
        f"{r['speedup_target']:6.1f} {r['floor_ratio']:9.3f} {r['mac_mb']:7.1f} {r['floor_mb']:8.1f} "
        f"{r['captum_mb']:9.1f}"
    )


def print_tables(rows: List[Dict], memory: List[Dict], batches: List[Dict]) -> None:
    print(ROW_HEADER)
    print("-" * len(ROW_HEADER))
    for r in rows:
        print(format_row(r))
    if any(r["captum_internal_batch_size"] for r in rows):
        print("* Captum ran out of memory with all grid points in one batch; timed with 32 rows per pass instead")
    if memory:
        print(f"\n{'network':9s} {'size':>4s} {'MB at N=8':>10s} {'MB at N=200':>11s} {'ratio':>6s}")
        for m in memory:
            print(f"{m['network']:9s} {m['size']:4d} {m['mb_8']:10.1f} {m['mb_200']:11.1f} {m['ratio']:6.2f}")
    if batches:
        print(f"\n{'grid points/pass':>16s} {'MAC s':>8s} {'floor s':>8s} {'MAC/floor':>9s} {'MAC MB':>8s}")
        for b in batches:
            print(f"{str(b['steps_per_pass']):>16s} {b['mac_s']:8.2f} {b['floor_s']:8.2f} {b['ratio']:9.3f} "
                  f"{b['mac_mb']:8.1f}")  # fmt: skip


def scaling(folder: Path, threads: int) -> Dict[str, Any]:
    """Time of all-layer MAC (DnCNN-style, CPU) against layers, n_steps and image size; one PNG per curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    build, _ = NETWORKS["dncnn"]
    model = build(True).eval()
    forward = targets.gradient_magnitude(model)
    layers = list(macattr.candidate_layers(model).values())

    def timed(n_layers: int, n_steps: int, size: int) -> float:
        x = torch.rand(1, 3, size, size)
        chosen = layers[:n_layers]
        LayerMAC(forward, chosen).attribute(x, n_steps=2, seed=0)
        best = math.inf
        for _ in range(2):
            started = time.perf_counter()
            LayerMAC(forward, chosen).attribute(x, n_steps=n_steps, seed=0)
            best = min(best, time.perf_counter() - started)
        return best

    curves = {
        "layers": ([1, 2, 4, 8, 12, len(layers)], lambda v: timed(v, 32, 32), "layers attributed in one sweep"),
        "n_steps": ([8, 16, 32, 64, 128, 200], lambda v: timed(len(layers), v, 32), "n_steps"),
        "size": ([16, 32, 48, 64, 96], lambda v: timed(len(layers), 32, v), "image side (pixels)"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (values, run, label) in curves.items():
        seconds = [run(v) for v in values]
        out[name] = dict(zip(map(str, values), seconds))
        figure, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
        ax.plot(values, seconds, "o-")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds")
        ax.set_ylim(bottom=0)
        ax.set_title(f"all-layer MAC time vs {name} (DnCNN-style, CPU)")
        figure.savefig(folder / f"scaling_{name}.png", dpi=110)
        plt.close(figure)
        print(f"scaling {name}: " + ", ".join(f"{v}: {s:.2f} s" for v, s in zip(values, seconds)))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small networks and inputs, N = 32 (a few minutes)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="CUDA: run under bf16 autocast")
    parser.add_argument("--networks", help="default: dncnn,swinir-small,resnet18 (CPU); dncnn,swinir,resnet18 (CUDA)")
    parser.add_argument("--batch", type=int, default=1, help="images per attribution call")
    parser.add_argument("--reps", type=int, default=2, help="timed repetitions after the warm-up")
    parser.add_argument("--captum-layers", type=int, default=3, help="layers Captum is timed on (then extrapolated)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=lambda t: [int(v) for v in t.split(",")], help="n_steps list, e.g. 32,200")
    parser.add_argument("--scaling", help="folder for the scaling plots (skips the main table)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.scaling:
        results: Dict[str, Any] = {"scaling": scaling(Path(args.scaling), args.threads)}
    else:
        default = "dncnn,swinir,resnet18" if args.device.startswith("cuda") else "dncnn,swinir-small,resnet18"
        args.networks = [n.strip() for n in (args.networks or default).split(",") if n.strip()]
        unknown = set(args.networks) - set(NETWORKS)
        if unknown:
            parser.error(f"--networks: unknown {sorted(unknown)}; choose from {sorted(NETWORKS)}")
        rows = []
        for row in plan(args):
            rows.append(run_row(row, args))
            print("progress:", format_row(rows[-1]), flush=True)
        memory = memory_rows(args)
        batches = batch_size_rows(args) if args.device.startswith("cuda") else []
        print_tables(rows, memory, batches)
        results = {"rows": rows, "memory": memory, "batch_sizes": batches}
    results["machine"] = dict(
        device=torch.cuda.get_device_name() if args.device.startswith("cuda") else os.uname().machine,
        threads=args.threads, torch=torch.__version__, quick=args.quick, bf16=args.bf16,
    )  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
