"""What a selection counts: tied layers and whole blocks as units, and the data-free baselines (condition
number, random blocks) that select them."""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from macattr import LayerScores, rank_layers
from macattr.layers import block_of
from macattr.restoration.images import save_image


class ConvBnUNet(nn.Module):
    """A small U-Net of Conv–BatchNorm–ReLU stages: two down, one up with a skip, a 1×1 output."""

    def __init__(self) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.inc, self.down = stage(3, 8), stage(8, 8)
        self.up = stage(16, 8)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.inc(x)
        low = self.down(nn.functional.max_pool2d(first, 2))
        up = nn.functional.interpolate(low, scale_factor=2.0)
        return self.out(self.up(torch.cat([first, up], dim=1)))


def _unet(seed: int) -> ConvBnUNet:
    torch.manual_seed(seed)
    model = ConvBnUNet()
    for module in model.modules():  # BatchNorm statistics as after training: not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 100))
def test_a_convolution_and_its_eval_batchnorm_are_one_unit_at_every_k(seed: int) -> None:
    model = _unet(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few steps: the certificate's warning is not what this test reads
        scores = rank_layers(model, [torch.rand(2, 3, 8, 8)], n_steps=8, seed=seed, progress=False)
    pairs = [(f"{s}.0", f"{s}.1") for s in ("inc", "down", "up")]
    for conv, norm in pairs:  # float32 rounding apart, far closer than any two other layers
        assert scores[conv] == pytest.approx(scores[norm], rel=1e-6)
    units = scores.units()
    assert all(any({conv, norm} <= set(unit) for unit in units) for conv, norm in pairs)
    assert len(units) == len(scores) - len(pairs) == 4
    for k in range(1, len(units) + 1):  # the boundary never falls inside a pair
        chosen = set(scores.top_k(k))
        assert all(len({conv, norm} & chosen) in (0, 2) for conv, norm in pairs)
        assert len(scores.top_k(k, ties="apart")) == k
    sizes = scores.parameters  # a pair costs both layers' parameters against a parameter budget
    top = scores.top_k(0.3, "parameters")
    assert sum(sizes[n] for n in top) <= 0.3 * scores.model_parameters


@pytest.mark.filterwarnings("ignore")
def test_ties_reach_select_top_k_lora_config_confidence_and_the_command(tmp_path: Path) -> None:
    from macattr import select_top_k
    from macattr.cli import main
    from macattr.peft import lora_config

    options = dict(n_steps=8, seed=0, progress=False)  # few steps: the certificate's warnings are filtered
    images = [torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    scores = rank_layers(_unet(0), images, **options)
    together, apart = scores.top_k(2), scores.top_k(2, ties="apart")
    assert len(apart) == 2 and len(together) > 2  # the UNet's units hold a pair at the top: two units, 3+ layers
    assert select_top_k(_unet(0), images, k=2, **options) == together
    assert select_top_k(_unet(0), images, k=2, ties="apart", **options) == apart
    with pytest.raises(ValueError, match="ties must be None, 'together' or 'apart'"):
        select_top_k(_unet(0), images, k=2, ties="pairs", **options)
    modules = dict(_unet(0).named_modules())
    assert lora_config(scores, _unet(0), k=2, ties="apart").targets == [
        n for n in apart if isinstance(modules[n], nn.Conv2d)
    ]
    sure = scores.confidence(2, ties="apart", resamples=20)
    assert sum(sure.in_top_k.values()) == pytest.approx(2)  # every resample selects 2 layers
    torch.save(_unet(0).state_dict(), tmp_path / "unet.pth")
    (tmp_path / "images").mkdir()
    for i, image in enumerate(images):
        save_image(tmp_path / "images" / f"{i}.png", image[0])
    (tmp_path / "tied_unet.py").write_text("import torch\nfrom torch import nn\n\n\n" + inspect.getsource(ConvBnUNet))
    command = ["rank", "--model", "tied_unet:ConvBnUNet", "--weights", "unet.pth", "--images", "images", "--k", "2",
               "--n-steps", "8", "--no-progress", "--out", "s.json"]  # fmt: skip
    printed = {}
    for ties in ("together", "apart"):
        out, previous = io.StringIO(), os.getcwd()
        os.chdir(tmp_path)
        try:
            with contextlib.redirect_stdout(out):
                assert main([*command, "--ties", ties]) == 0
        finally:
            os.chdir(previous)
        printed[ties] = [line.split(".", 1)[1].split()[0] for line in out.getvalue().splitlines()
                         if re.match(r"\s+\d+\. ", line)]  # fmt: skip
    assert len(printed["apart"]) == 2 and len(printed["together"]) > 2


def test_a_count_beyond_the_units_names_the_units_and_the_way_out() -> None:
    scores = LayerScores({"conv": 2.0, "bn": 2.0, "head": 1.0}, "mac")
    with pytest.raises(ValueError, match="3 layers make 2 units .* ties='apart'"):
        scores.top_k(3)
    assert scores.top_k(3, ties="apart") == ["conv", "bn", "head"] and scores.top_k(2) == ["conv", "bn", "head"]


def test_the_unit_helpers_refuse_bad_arguments_by_name() -> None:
    from macattr.selection import units

    with pytest.raises(ValueError, match="tie must be a relative tolerance in \\[0, 1\\)"):
        units({"a": 1.0}, tie=-0.1)
    with pytest.raises(TypeError, match="name must be a layer's name"):
        block_of(3)
    with pytest.raises(ValueError, match="strategy must be one of .*blocks"):
        LayerScores({"a": 1.0}, "mac").top_k(1, strategy="block")


def test_equal_scores_of_zero_are_not_ties() -> None:
    scores = LayerScores({"a": 0.0, "b": 0.0, "c": 1.0}, "mac")
    assert scores.units() == [["c"], ["a"], ["b"]] and scores.top_k(2) == ["c", "a"]
    with pytest.raises(ValueError, match="ties must be 'together' or 'apart'"):
        scores.top_k(1, ties="both")


def _linear_stack(seed: int) -> nn.Sequential:
    """Linear layers of varied shapes whose conditioning differs: some columns scaled down."""
    torch.manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate([(6, 8), (8, 8), (8, 5), (5, 7), (7, 7), (7, 4), (4, 6), (6, 3)]):
        layer = nn.Linear(n_in, n_out)
        layer.weight.data[:, 0] *= 0.05 * (i + 1)
        layers += [layer, nn.Tanh()]
    return nn.Sequential(*layers)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 1000))
def test_the_condition_number_criterion_scores_the_weights(seed: int) -> None:
    model = _linear_stack(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # data-free: no warning about the order without a loader
        scores = rank_layers(model, method="kappa")
    for name in scores:  # a direct computation: the smallest over the largest singular value
        singular = np.linalg.svd(model.get_submodule(name).weight.detach().double().numpy(), compute_uv=False)
        assert scores[name] == pytest.approx(singular[-1] / singular[0], rel=1e-9)
    in_depth = rank_layers(model, [torch.rand(2, 6)], method="kappa")  # a loader only orders them by depth
    assert dict(in_depth) == dict(scores) and in_depth.images == 0


def test_the_condition_number_criterion_selects_what_peft_selects() -> None:
    peft = pytest.importorskip("peft")
    if not hasattr(peft, "find_kappa_target_modules"):
        pytest.skip(f"PEFT {peft.__version__} has no find_kappa_target_modules (0.21 and later do)")
    for seed, share in ((0, 0.25), (1, 0.5), (2, 0.75)):
        model = _linear_stack(seed)
        scores = rank_layers(model, method="kappa")
        count = max(1, int(len(scores) * share))  # PEFT rounds the share down
        theirs = peft.find_kappa_target_modules(model, top_p=share, show_progress=False)["target_modules"]
        assert sorted(scores.top_k(count)) == sorted(theirs)


def test_a_layer_without_a_weight_matrix_scores_zero_under_the_condition_number() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    scores = rank_layers(model, method="kappa")
    assert scores["1"] == 0.0 and scores["0"] > 0 and scores["2"] > 0


class Blocks(nn.Module):
    """A stem, four numbered blocks of two layers each, a head: the shape of a transformer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.ModuleList(nn.ModuleDict({"attn": nn.Linear(8, 8), "mlp": nn.Linear(8, 8)}) for _ in range(4))
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = x + block["mlp"](torch.tanh(block["attn"](x)))
        return self.head(x)


def test_random_blocks_select_whole_blocks_drawn_anew_for_each_seed() -> None:
    model = Blocks()
    drawn = [rank_layers(model, [torch.rand(2, 4)], method="random_blocks", seed=seed) for seed in range(6)]
    for scores in drawn:
        for i in range(4):
            assert scores[f"blocks.{i}.attn"] == scores[f"blocks.{i}.mlp"]
        top = scores.top_k(2)  # two units: whole blocks, or the stem or the head on their own
        assert len({block_of(name) for name in top}) == 2
        assert all(f"{block}.attn" in top and f"{block}.mlp" in top for block in map(block_of, top)
                   if block.startswith("blocks."))  # fmt: skip
    assert len({tuple(scores.top_k(2)) for scores in drawn}) > 1


def test_the_blocks_strategy_takes_whole_blocks_by_their_summed_score() -> None:
    names = ["stem", "blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp", "head"]
    values = [5.0, 1.0, 3.5, 2.0, 2.1, 0.5]  # block 0 sums 4.5, block 1 4.1; the stem alone 5
    sizes = [10, 20, 20, 20, 20, 5]
    scores = LayerScores(dict(zip(names, values)), "mac", parameters=dict(zip(names, sizes)), model_parameters=95)
    assert scores.top_k(2, strategy="blocks") == ["stem", "blocks.0.mlp", "blocks.0.attn"]
    assert scores.top_k(2) == ["stem", "blocks.0.mlp"]  # layer by layer
    assert scores.top_k(50, "parameters", strategy="blocks") == ["stem", "blocks.0.mlp", "blocks.0.attn"]
    assert scores.top_k(35, "parameters", strategy="blocks") == ["stem", "head"]  # block 0 no longer fits


def test_equal_scores_of_copied_weights_are_not_one_unit_outside_conductance() -> None:
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 4,
                                    enable_nested_tensor=False)  # fmt: skip
    kappa = rank_layers(encoder, None, "kappa")  # the four deep-copied layers' weights tie exactly
    assert kappa.top_k(1) == ["layers.0.self_attn"] and kappa.top_k(1, ties="together") != kappa.top_k(1)
    tied = LayerScores({"conv": 2.0, "bn": 2.0, "head": 1.0}, "mac")
    assert tied.top_k(1) == ["conv", "bn"]  # a convolution and its BatchNorm: one unit under MAC
    assert LayerScores(dict(tied), "gradnorm").top_k(1) == ["conv"]
