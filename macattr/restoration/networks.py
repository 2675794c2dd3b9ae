"""Restoration networks: SwinIR-style and PromptIR-style, at any size from a few thousand parameters up.

Images are (N, 3, H, W) in [0, 1]. ``forward(x, mask)`` takes an optional pixel
mask (N, 1, H, W), 1 = masked: masked pixels are replaced by a learned mask
token before the network sees them (RAM's mask pre-training).

SwinIR-style (Liang et al. 2021): shallow conv → layer norm (SwinIR's patch
embedding) → residual groups of shifted-window attention blocks, each group
closed by a 3×3 conv and a skip → layer norm → conv after the body (+ shallow
features) → reconstruction conv, added to the input. At SwinIR's size (dim 180,
6 groups of 6 blocks) it has 263 candidate layers, as the RAM paper counts.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def window_partition(x: Tensor, size: int) -> Tensor:
    """(B, H, W, C) → (B · H/size · W/size, size², C).

    Examples:
        >>> window_partition(torch.rand(2, 8, 8, 5), 4).shape
        torch.Size([8, 16, 5])
    """
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, size * size, c)


def window_merge(windows: Tensor, size: int, h: int, w: int) -> Tensor:
    """(B · H/size · W/size, size², C) → (B, H, W, C); the inverse of
    [`window_partition()`][macattr.restoration.networks.window_partition].

    Examples:
        >>> x = torch.rand(2, 8, 8, 5)
        >>> torch.equal(window_merge(window_partition(x, 4), 4, 8, 8), x)
        True
    """
    c = windows.shape[-1]
    x = windows.view(-1, h // size, w // size, size, size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(size: int) -> Tensor:
    """(size², size²) index into a ((2·size − 1)², heads) bias table.

    Examples:
        >>> relative_position_index(2).tolist()
        [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    """
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (size - 1)
    return relative[..., 0] * (2 * size - 1) + relative[..., 1]


def shifted_window_mask(h: int, w: int, size: int, shift: int, device: torch.device) -> Tensor:
    """(windows, size², size²) additive mask: −100 between pixels from different regions after the cyclic shift.

    Examples:
        >>> shifted_window_mask(8, 8, 4, 2, torch.device("cpu")).shape
        torch.Size([4, 16, 16])
    """
    regions = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -size), slice(-size, -shift), slice(-shift, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            regions[:, rows, cols, :] = label
            label += 1
    windows = window_partition(regions, size).squeeze(-1)
    different = windows[:, None, :] != windows[:, :, None]
    return different.float() * -100.0


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias.

    Examples:
        >>> WindowAttention(dim=8, window=4, heads=2)(torch.rand(3, 16, 8)).shape
        torch.Size([3, 16, 8])
    """

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x: (B·windows, n, C); mask: (windows, n, n) or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        attn = attn + bias[None]
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(bw // windows, windows, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear → GELU → linear on the last dimension: (..., dim) → (..., dim).

    Examples:
        >>> Mlp(8, 16)(torch.rand(2, 8)).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm window attention and MLP, both residual; every other block shifts the windows by half.

    Examples:
        >>> SwinBlock(dim=8, heads=2, window=4, shift=2, mlp_ratio=2.0)(torch.rand(1, 8, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, H, W, C) with H, W multiples of the window size."""
        b, h, w, c = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), dims=(1, 2))
        mask = shifted_window_mask(h, w, self.window, self.shift, x.device) if self.shift else None
        x = window_merge(self.attn(window_partition(x, self.window), mask), self.window, h, w)
        if self.shift:
            x = torch.roll(x, (self.shift, self.shift), dims=(1, 2))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class ResidualGroup(nn.Module):
    """SwinIR's RSTB: Swin blocks, then a 3×3 conv, with a skip over the group. (B, C, H, W) → same.

    Examples:
        >>> ResidualGroup(dim=8, depth=2, heads=2, window=4, mlp_ratio=2.0)(torch.rand(1, 8, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio) for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            h = block(h)
        return x + self.conv(h.permute(0, 3, 1, 2))


class SwinIRStyle(nn.Module):
    """A SwinIR-style restorer: (N, 3, H, W) → (N, 3, H, W); any H, W (reflect-padded to the window).

    Examples:
        >>> model = SwinIRStyle(dim=16, depths=(2, 2), heads=2, window=4)
        >>> model(torch.rand(1, 3, 20, 18)).shape
        torch.Size([1, 3, 20, 18])
    """

    def __init__(
        self,
        dim: int = 60,
        depths: Sequence[int] = (6, 6, 6, 6),
        heads: int = 6,
        window: int = 8,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        self.window = window
        self.mask_token = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.conv_first = nn.Conv2d(3, dim, 3, padding=1)
        self.patch_norm = nn.LayerNorm(dim)  # SwinIR's patch_embed.norm
        self.layers = nn.ModuleList(ResidualGroup(dim, d, heads, window, mlp_ratio) for d in depths)
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv_last = nn.Conv2d(dim, 3, 3, padding=1)

    def _pad(self, x: Tensor) -> Tuple[Tensor, int, int]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.window, (-w) % self.window
        return (F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x), h, w

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if mask is not None:
            x = x * (1 - mask) + self.mask_token * mask
        padded, h, w = self._pad(x)
        shallow = self.conv_first(padded)
        deep = self.patch_norm(shallow.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        for group in self.layers:
            deep = group(deep)
        deep = self.norm(deep.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        out = self.conv_last(self.conv_after_body(deep) + shallow)
        return x + out[..., :h, :w]


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of (N, C, H, W).

    Examples:
        >>> LayerNorm2d(4)(torch.rand(1, 4, 3, 3)).mean(dim=1).abs().max().item() < 1e-6
        True
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelAttention(nn.Module):
    """Restormer's MDTA: attention across channels (transposed), queries/keys/values from 1×1 + depthwise 3×3 convs.

    Examples:
        >>> ChannelAttention(dim=8, heads=2)(torch.rand(1, 8, 6, 6)).shape
        torch.Size([1, 8, 6, 6])
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.qkv_dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).reshape(n, c, h, w))


class GatedFeedForward(nn.Module):
    """Restormer's GDFN: 1×1 expand, depthwise 3×3, GELU gate, 1×1 project.

    Examples:
        >>> GatedFeedForward(dim=8, expansion=2.0)(torch.rand(1, 8, 6, 6)).shape
        torch.Size([1, 8, 6, 6])
    """

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.project_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Restormer block: x + MDTA(norm(x)), then + GDFN(norm(·)). (N, C, H, W) → same.

    Examples:
        >>> TransformerBlock(dim=8, heads=2)(torch.rand(1, 8, 6, 6)).shape
        torch.Size([1, 8, 6, 6])
    """

    def __init__(self, dim: int, heads: int, expansion: float = 2.0) -> None:
        super().__init__()
        self.norm1, self.attn = LayerNorm2d(dim), ChannelAttention(dim, heads)
        self.norm2, self.ffn = LayerNorm2d(dim), GatedFeedForward(dim, expansion)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class PromptBlock(nn.Module):
    """PromptIR's prompt: learned components mixed by weights from the pooled features, resized to the
    feature map, concatenated to it and refined by a transformer block and a 1×1 conv back to ``dim``.

    Examples:
        >>> PromptBlock(dim=8, prompt_dim=4, components=3, size=4, heads=2)(torch.rand(1, 8, 6, 6)).shape
        torch.Size([1, 8, 6, 6])
    """

    def __init__(self, dim: int, prompt_dim: int, components: int, size: int, heads: int) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, components, prompt_dim, size, size))
        self.linear = nn.Linear(dim, components)
        self.conv = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1)
        self.block = TransformerBlock(dim + prompt_dim, heads)
        self.reduce = nn.Conv2d(dim + prompt_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        weights = self.linear(x.mean(dim=(2, 3))).softmax(dim=1)  # (N, components)
        prompt = (weights[:, :, None, None, None] * self.prompt_param).sum(dim=1)
        prompt = self.conv(F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.reduce(self.block(torch.cat([x, prompt], dim=1)))


class PromptIRStyle(nn.Module):
    """A PromptIR-style restorer: Restormer blocks in a 3-level U-Net, prompt blocks in the decoder.

    (N, 3, H, W) → (N, 3, H, W); H and W are reflect-padded to a multiple of 4.

    Examples:
        >>> model = PromptIRStyle(dim=8, blocks=(1, 1, 1), heads=(1, 1, 2))
        >>> model(torch.rand(1, 3, 30, 21)).shape
        torch.Size([1, 3, 30, 21])
    """

    def __init__(self, dim: int = 24, blocks: Sequence[int] = (2, 2, 3), heads: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        d1, d2, d3 = dim, 2 * dim, 4 * dim
        self.mask_token = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.patch_embed = nn.Conv2d(3, d1, 3, padding=1)
        self.encoder1 = nn.Sequential(*(TransformerBlock(d1, heads[0]) for _ in range(blocks[0])))
        self.down1 = nn.Conv2d(d1, d2, 3, stride=2, padding=1)
        self.encoder2 = nn.Sequential(*(TransformerBlock(d2, heads[1]) for _ in range(blocks[1])))
        self.down2 = nn.Conv2d(d2, d3, 3, stride=2, padding=1)
        self.latent = nn.Sequential(*(TransformerBlock(d3, heads[2]) for _ in range(blocks[2])))
        self.prompt2 = PromptBlock(d3, d3 // 2, 5, 8, heads[2])
        self.up2 = nn.ConvTranspose2d(d3, d2, 2, stride=2)
        self.reduce2 = nn.Conv2d(2 * d2, d2, 1)
        self.decoder2 = nn.Sequential(*(TransformerBlock(d2, heads[1]) for _ in range(blocks[1])))
        self.prompt1 = PromptBlock(d2, d2 // 2, 5, 16, heads[1])
        self.up1 = nn.ConvTranspose2d(d2, d1, 2, stride=2)
        self.decoder1 = nn.Sequential(*(TransformerBlock(2 * d1, heads[0]) for _ in range(blocks[0])))
        self.output = nn.Conv2d(2 * d1, 3, 3, padding=1)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if mask is not None:
            x = x * (1 - mask) + self.mask_token * mask
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        padded = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
        e1 = self.encoder1(self.patch_embed(padded))
        e2 = self.encoder2(self.down1(e1))
        latent = self.prompt2(self.latent(self.down2(e2)))
        d2 = self.prompt1(self.decoder2(self.reduce2(torch.cat([self.up2(latent), e2], dim=1))))
        d1 = self.decoder1(torch.cat([self.up1(d2), e1], dim=1))
        return x + self.output(d1)[..., :h, :w]


ARCHITECTURES = {"swinir": SwinIRStyle, "promptir": PromptIRStyle}

__all__ = [
    "ARCHITECTURES",
    "ChannelAttention",
    "GatedFeedForward",
    "LayerNorm2d",
    "Mlp",
    "PromptBlock",
    "PromptIRStyle",
    "ResidualGroup",
    "SwinBlock",
    "SwinIRStyle",
    "TransformerBlock",
    "WindowAttention",
    "relative_position_index",
    "shifted_window_mask",
    "window_merge",
    "window_partition",
]
