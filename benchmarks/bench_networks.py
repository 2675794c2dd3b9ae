"""The networks the benchmarks measure: DnCNN-style, SwinIR-style (macattr.restoration's), ResNet-18-like, the
demo network pre-trained, the RAM example's ``medium`` networks and Hugging Face's Swin2SR."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from macattr.restoration.networks import SwinIRStyle
from macattr.weights import load_weights


def dncnn(channels: int = 64, depth: int = 17) -> nn.Module:
    """DnCNN without batch norm: ``depth`` 3×3 convs with ReLU between, predicting the residual."""
    layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(channels, 3, 3, padding=1))

    class DnCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(*layers)

        def forward(self, x: Tensor) -> Tensor:
            return x - self.body(x)

    return DnCNN()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(width: int = 64, classes: int = 10) -> nn.Module:
    """ResNet-18 layout (2-2-2-2 basic blocks) for small images, in eval mode."""
    widths = [width, 2 * width, 4 * width, 8 * width]
    blocks, cin = [], width
    for i, w in enumerate(widths):
        for j in range(2):
            blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
            cin = w
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        *blocks,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(cin, classes),
    )
    return model.eval()


# name → (builder(quick) -> model, kind): "image" models use the gradient-magnitude target, "class" a class index.
# "swinir" is SwinIR-light's size (dim 60, 4 groups of 6 blocks, 177 candidate layers); "swinir-small" is
# the same architecture with dim 30 and 2 groups of 2 blocks (35 layers), small enough for CPU runs.
NETWORKS: Dict[str, Tuple[Callable[[bool], nn.Module], str]] = {
    "dncnn": (lambda quick: dncnn(32 if quick else 64), "image"),
    "swinir": (lambda quick: SwinIRStyle(dim=60, depths=(6, 6, 6, 6), heads=6), "image"),
    "swinir-small": (lambda quick: SwinIRStyle(dim=30, depths=(2, 2), heads=3), "image"),
    "resnet18": (lambda quick: resnet18(16 if quick else 64), "class"),
}


def pretrained_demo(folder: Path) -> nn.Module:
    """The demo network with the demo's mask pre-training (300 steps), trained once into ``folder`` and reused."""
    from macattr.restoration.demo import demo_network, run_demo

    weights = Path(folder) / "model.pt"
    if not weights.is_file():
        run_demo(folder, n_steps=1, progress=False)
    return load_weights(demo_network(), weights).eval()


def ram_medium(arch: str, weights: Optional[Path]) -> nn.Module:
    """The RAM example's ``medium`` network ``arch`` ("swinir": 121 layers, "promptir"), with the mask
    pre-trained ``weights`` of ``python -m examples.ram analyze --preset medium`` (OUT/pretrain/model.pt), or
    random weights (seed 0) without them."""
    try:
        from examples.ram.presets import PRESETS
    except ModuleNotFoundError:
        raise SystemExit(
            "the medium networks come from the RAM example: run from the repository root with "
            "PYTHONPATH=. (e.g. PYTHONPATH=. python benchmarks/bench_cost.py)"
        ) from None
    from macattr.restoration.networks import ARCHITECTURES

    torch.manual_seed(0)
    model = ARCHITECTURES[arch](**PRESETS["medium"].architectures[arch].network)
    return (load_weights(model, weights) if weights is not None else model).eval()


def tiny_llama(hidden: int = 64, layers: int = 4, vocab: int = 128, seed: int = 0) -> nn.Module:
    """A Llama-style causal LM (transformers' ``LlamaForCausalLM``) with random weights drawn after
    ``torch.manual_seed(seed)``, float64, in eval mode: ``layers`` blocks of width ``hidden``, MLP width
    2 × ``hidden``, heads of 16 dimensions, positions up to 64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = max(1, hidden // 16)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval().double()


def swin2sr(seed: int = 0) -> nn.Module:
    """Hugging Face's Swin2SR (transformers), random weights, denoising size: embed dim 30, 2 stages of 2 blocks,
    window 4, no upsampling (54 candidate layers); its output is ``.reconstruction``."""
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    torch.manual_seed(seed)
    config = Swin2SRConfig(image_size=32, embed_dim=30, depths=[2, 2], num_heads=[3, 3], window_size=4, upscale=1,
                           upsampler="", num_channels=3)  # fmt: skip
    return Swin2SRForImageSuperResolution(config).eval()
