"""A real-size Llama-style LLM ranked on this machine: seconds per pass, peak memory, the whole ranking's time,
and the projection to one GPU from the FLOP count.

    python benchmarks/bench_llm_scale.py --json docs/bench/llm_scale.json            # 0.5B, ~25 min on 2 cores
    python benchmarks/bench_llm_scale.py --size tiny --json /tmp/llm_tiny.json       # the same steps in seconds

The model is transformers' ``LlamaForCausalLM`` built from a config (no download), random weights drawn after
``torch.manual_seed(0)``, with the shape of a 0.5B model (hidden 896, 24 layers, MLP 4864, 14 heads, 2 key-value
heads, vocabulary 151,936, tied embeddings: 494 M parameters). One sequence of 256 random tokens enters as
embeddings (``input_name="inputs_embeds"``, ``mask_dims="sequence"``, the pad token's embedding as the start),
and the attributed output is the logit of the sequence's own next token at its last position. Every module
with parameters or an output is a candidate layer (the default).

Each measurement runs in its own process, so that its peak resident memory (``ru_maxrss``) is its own:

- ``floor``: one forward and backward pass of the model alone, to the input embeddings (no hooks), and its
  FLOPs (``torch.utils.flop_counter``);
- ``probe``: ``rank_layers`` at N = 7 (8 grid points, one per pass here): seconds per grid point with every
  layer hooked and summed, and the peak memory above the model's;
- ``ranking`` (float32 only): the whole ranking at N = 50, trapezoid, with its certificate.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch
from resumable import write_results

SIZES = {
    # hidden, layers, MLP, heads, key-value heads, vocabulary
    "0.5b": (896, 24, 4864, 14, 2, 151936),
    "tiny": (64, 2, 128, 4, 2, 512),
}
SEQUENCE = 256
PROBE_STEPS = 7
RANKING_STEPS = 50
H100_BF16_DENSE_FLOPS = 989e12  # NVIDIA's datasheet figure for the SXM card, without sparsity


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _model_and_batch(size: str, dtype: torch.dtype) -> tuple:
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, mlp, heads, kv_heads, vocab = SIZES[size]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=True,
                         max_position_embeddings=SEQUENCE + 1)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().to(dtype)
    tokens = torch.randint(1, vocab, (1, SEQUENCE + 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embeddings = model.get_input_embeddings()(tokens[:, :SEQUENCE])
    labels = torch.tensor([[SEQUENCE - 1, int(tokens[0, SEQUENCE])]])
    return model, embeddings, labels


def _floor(model: torch.nn.Module, embeddings: torch.Tensor, labels: torch.Tensor) -> Dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    model.requires_grad_(False)  # the gradient reaches the input only, as an attribution's does

    def one_pass() -> None:
        x = embeddings.detach().requires_grad_(True)
        logits = model(inputs_embeds=x).logits
        logits[0, labels[0, 0], labels[0, 1]].backward()

    one_pass()  # warm-up
    started = time.perf_counter()
    one_pass()
    seconds = time.perf_counter() - started
    counter = FlopCounterMode(display=False)
    with counter:
        one_pass()
    return {"seconds_per_pass": seconds, "flops_per_pass": counter.get_total_flops()}


def _rank(model: torch.nn.Module, embeddings: torch.Tensor, labels: torch.Tensor, n_steps: int) -> Dict[str, Any]:
    import macattr
    from macattr.baselines import token_embedding

    started = time.perf_counter()
    scores = macattr.rank_layers(model, [(embeddings, labels)], target="label", input_name="inputs_embeds",
                                 mask_dims="sequence", baselines=token_embedding(model, 0), rule="trapezoid",
                                 n_steps=n_steps, progress=False, seed=0)  # fmt: skip
    seconds = time.perf_counter() - started
    certificate = scores.certificate()
    return {"seconds": seconds, "grid_points": n_steps + 1, "seconds_per_grid_point": seconds / (n_steps + 1),
            "layers": len(scores), "top_10_percent": scores.top_k(0.1),
            "certificate": {"trusted": certificate.trusted, "summary": certificate.summary()}}  # fmt: skip


def measure(size: str, dtype_name: str, what: str) -> Dict[str, Any]:
    """One measurement in this process: ``what`` is "floor", "probe" or "ranking"."""
    dtype = getattr(torch, dtype_name)
    model, embeddings, labels = _model_and_batch(size, dtype)
    with_model = _current_rss_bytes()
    if what == "floor":
        result = _floor(model, embeddings, labels)
    else:
        result = _rank(model, embeddings, labels, PROBE_STEPS if what == "probe" else RANKING_STEPS)
    parameters = sum(p.numel() for p in model.parameters())
    return {**result, "parameters": parameters, "rss_with_model_bytes": with_model,
            "peak_rss_bytes": _peak_rss_bytes(), "peak_above_model_bytes": _peak_rss_bytes() - with_model}  # fmt: skip


def _in_subprocess(size: str, dtype_name: str, what: str, threads: int) -> Dict[str, Any]:
    command = [sys.executable, __file__, "--size", size, "--threads", str(threads), "--one", f"{dtype_name}:{what}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: Dict[str, Any]) -> str:
    rows = ["| dtype | measurement | seconds | per grid point (s) | peak above model (GiB) | peak (GiB) |",
            "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for key, row in results["runs"].items():
        dtype, what = key.split(":")
        per_point = row.get("seconds_per_grid_point", row.get("seconds_per_pass"))
        seconds = row.get("seconds", row.get("seconds_per_pass"))
        rows.append(f"| {dtype} | {what} | {seconds:.1f} | {per_point:.2f} | "
                    f"{row['peak_above_model_bytes'] / 2**30:.2f} | {row['peak_rss_bytes'] / 2**30:.2f} |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--skip-ranking", action="store_true", help="leave out the whole N = 50 ranking")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # dtype:what, in a subprocess
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one is not None:
        print(json.dumps(measure(args.size, *args.one.split(":"))))
        return
    plan = ["float32:floor", "float32:probe", "bfloat16:floor", "bfloat16:probe"]
    plan += [] if args.skip_ranking else ["float32:ranking"]
    results: Dict[str, Any] = {
        "size": args.size, "sequence": SEQUENCE, "threads": args.threads, "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads", "runs": {},
    }  # fmt: skip
    for key in plan:
        results["runs"][key] = _in_subprocess(args.size, *key.split(":"), args.threads)
        print(key, json.dumps(results["runs"][key]), flush=True)
        write_results(args.json, results)
    floor = results["runs"]["float32:floor"]
    seconds_on_h100 = floor["flops_per_pass"] * (RANKING_STEPS + 1) / H100_BF16_DENSE_FLOPS
    results["projection"] = {"grid_points": RANKING_STEPS + 1, "flops": floor["flops_per_pass"] * (RANKING_STEPS + 1),
                             "h100_bf16_seconds_at_peak": seconds_on_h100}  # fmt: skip
    write_results(args.json, results)
    print(_table(results))
    print(f"N = {RANKING_STEPS} on one H100 at its bf16 peak: {seconds_on_h100:.2f} s "
          f"({floor['flops_per_pass'] / 1e9:.1f} GFLOP per grid point)")  # fmt: skip


if __name__ == "__main__":
    main()
