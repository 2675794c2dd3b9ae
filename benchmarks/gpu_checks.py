"""Correctness on CUDA, run on a GPU machine (CI has none): prints one line per check and exits 1 on a failure.

    python benchmarks/gpu_checks.py

- MAC on CUDA equals MAC on the CPU (float64), all layers of a residual net in one sweep;
- conductance along the linear path equals Captum's LayerConductance (riemann_trapezoid) on CUDA;
- completeness is exact at the last layer on CUDA (float64);
- bf16 autocast stays close to float32 and returns float32 sums;
- the automatic grid points per pass chosen on this GPU, and the model left as found;
- the memory model of a pass against the CUDA allocator's peak;
- a model split over cuda:0 and the CPU by a device map (accelerate) ranks as it does on the CPU.
"""

from __future__ import annotations

import sys

import torch
from captum.attr import LayerConductance
from torch import nn

import macattr
from bench_networks import NETWORKS
from macattr import LayerMAC, LayerPathConductance, targets
from macattr.engine import planning_passes


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 1))
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        return self.tail(h + self.block(h))


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    failures = 0

    def check(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")

    torch.manual_seed(0)
    cpu_model = Residual().double()
    gpu_model = Residual().double().cuda()
    gpu_model.load_state_dict(cpu_model.state_dict())
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    layers = lambda m: [m.head, m.block[0], m.block[2], m.tail]  # noqa: E731
    cpu = LayerMAC(targets.gradient_magnitude(cpu_model), layers(cpu_model)).attribute(x, n_steps=50, seed=0)
    gpu = LayerMAC(targets.gradient_magnitude(gpu_model), layers(gpu_model)).attribute(x.cuda(), n_steps=50, seed=0)
    diff = max((a - b.cpu()).abs().max().item() for a, b in zip(cpu, gpu))
    check("MAC CUDA == CPU (float64)", diff < 1e-9, f"max |difference| {diff:.2e}")

    forward = targets.output_sum(gpu_model)
    worst = 0.0
    for layer in layers(gpu_model):
        ours = LayerPathConductance(forward, layer).attribute(x.cuda(), n_steps=40)
        theirs = LayerConductance(forward, layer).attribute(x.cuda(), n_steps=40, method="riemann_trapezoid")
        worst = max(worst, (ours - theirs).abs().max().item())
    check("linear-path conductance == Captum on CUDA", worst < 1e-6, f"max |difference| {worst:.2e}")

    _, delta = LayerMAC(forward, gpu_model.tail).attribute(x.cuda(), n_steps=30, seed=1, return_convergence_delta=True)
    check("completeness at the last layer (CUDA, float64)", delta.abs().max().item() < 1e-9,
          f"max |delta| {delta.abs().max().item():.2e}")  # fmt: skip

    model32 = Residual().cuda()
    model32.load_state_dict({k: v.float() for k, v in cpu_model.state_dict().items()})
    f32 = targets.gradient_magnitude(model32)
    exact = LayerMAC(f32, layers(model32)).attribute(x.float().cuda(), n_steps=50, seed=0)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = LayerMAC(f32, layers(model32)).attribute(x.float().cuda(), n_steps=50, seed=0)
    relative = max(((a - b).abs().sum() / b.abs().sum()).item() for a, b in zip(low, exact))
    check("bf16 autocast close to float32", relative < 0.1 and all(t.dtype == torch.float32 for t in low),
          f"largest relative L1 error {relative:.3f}, dtypes {sorted({str(t.dtype) for t in low})}")  # fmt: skip

    build, _ = NETWORKS["swinir"]
    swin = build(False).cuda().eval()
    flags = [p.requires_grad for p in swin.parameters()]
    image = torch.rand(1, 3, 64, 64, device="cuda")
    heard = []
    with planning_passes(report=lambda memory, steps: heard.append(memory.describe(steps))):
        scores = macattr.rank_layers(swin, [image.detach()], n_steps=200, progress=False)
    print(f"INFO SwinIR-style 64x64, automatic grid points per pass: {heard[0]}")
    unchanged = [p.requires_grad for p in swin.parameters()] == flags and all(p.grad is None for p in swin.parameters())
    check("rank_layers on CUDA (SwinIR-style, 177 layers) leaves the model as found", unchanged and len(scores) > 100,
          f"top 3: {scores.top_k(3)}")  # fmt: skip

    peak_before = torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    peaks = []
    with planning_passes(report=lambda memory, steps: peaks.append(memory.peak(steps))):
        macattr.rank_layers(swin, [image.detach()], n_steps=20, progress=False)
    live = torch.cuda.max_memory_allocated() - sum(p.numel() * p.element_size() for p in swin.parameters())
    check("memory model within 25 % of the CUDA allocator's peak above the weights", abs(peaks[0] - live) < 0.25 * live,
          f"predicted {peaks[0] / 2**20:.0f} MiB, allocated {live / 2**20:.0f} MiB (earlier peak "
          f"{peak_before / 2**20:.0f} MiB)")  # fmt: skip

    worst = _device_map_difference()
    check("a device map over cuda:0 and the CPU ranks as the model in place (float64)", worst < 1e-9,
          f"largest relative difference {worst:.2e}")  # fmt: skip
    return 1 if failures else 0


def _device_map_difference() -> float:
    """A small Llama with its first two blocks on the CPU and the rest on cuda:0 (accelerate's hooks move the
    activations): the largest relative difference of its scores to the model's on the CPU."""
    import accelerate
    import transformers

    from macattr.baselines import token_embedding

    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=2, num_key_value_heads=2,
                                      max_position_embeddings=32)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval().double()
    tokens = torch.randint(1, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    labels = torch.stack([torch.full((2,), 7), tokens[:, 8]], 1)  # (position 7, its next token)
    batch = [(model.get_input_embeddings()(tokens[:, :8]).detach(), labels)]
    options = dict(target="label", input_name="inputs_embeds", mask_dims="sequence", rule="trapezoid", n_steps=16,
                   baselines=token_embedding(model, 0), progress=False)  # fmt: skip
    on_cpu = macattr.rank_layers(model, batch, **options)
    on_cpu_layers = ["model.embed_tokens", "model.layers.0", "model.layers.1"]
    device_map = {name: ("cpu" if name in on_cpu_layers else 0) for name in
                  ["model.embed_tokens", *(f"model.layers.{i}" for i in range(4)), "model.norm", "model.rotary_emb",
                   "lm_head"]}  # fmt: skip
    split = accelerate.dispatch_model(model, device_map=device_map)
    mapped = macattr.rank_layers(split, batch, **options)
    return max(abs(mapped[name] - on_cpu[name]) / max(abs(on_cpu[name]), 1e-30) for name in on_cpu)


if __name__ == "__main__":
    sys.exit(main())
