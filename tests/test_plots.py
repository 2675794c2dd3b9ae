"""Plots render with Agg and show the scores."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from macattr import LayerScores, plot_comparison, plot_layer_importance
from macattr.plots import block_and_role, layer_grid


def _swin_like(n_groups: int, n_blocks: int) -> LayerScores:
    roles = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    names = ["conv_first"]
    for g in range(n_groups):
        names += [f"layers.{g}.residual_group.blocks.{b}.{r}" for b in range(n_blocks) for r in roles]
        names.append(f"layers.{g}.conv")
    names += ["conv_after_body", "conv_last"]
    rng = np.random.default_rng(0)
    return LayerScores(dict(zip(names, rng.uniform(0.1, 5.0, len(names)).tolist())), "mac", images=10)


def test_names_split_into_block_and_role() -> None:
    assert block_and_role("layers.0.residual_group.blocks.2.attn.qkv") == (
        "layers.0.residual_group.blocks.2",
        "attn.qkv",
    )
    assert block_and_role("layers.3.conv") == ("layers.3", "conv")
    assert block_and_role("conv_first") == ("(top)", "conv_first")
    assert block_and_role("body.3") == ("body", "3")


@pytest.mark.parametrize("groups, blocks", [(1, 3), (6, 6), (8, 6)])
def test_heatmap_cells_match_the_scores(groups: int, blocks: int) -> None:
    scores = _swin_like(groups, blocks)
    assert 20 <= len(scores) <= 300 + 3
    figure = plot_layer_importance(scores, top_k=0.1)
    image = next(a for a in figure.axes[0].get_children() if isinstance(a, AxesImage))
    data = np.ma.filled(image.get_array(), np.nan)
    rows, cols, matrix = layer_grid(scores)
    np.testing.assert_array_equal(np.isnan(data), np.isnan(matrix))
    for name, score in scores.items():
        block, role = block_and_role(name)
        assert data[rows.index(block), cols.index(role)] == score
    outlined = [p for p in figure.axes[0].patches if isinstance(p, Rectangle) and not p.get_fill()]
    assert len(outlined) == len(scores.top_k(0.1))
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == rows
    figure.canvas.draw()


def test_bar_chart_and_comparison_render(tmp_path) -> None:
    a, b = _swin_like(2, 2), _swin_like(2, 2)
    b = LayerScores({n: s * (1 + 0.5 * (i % 3)) for i, (n, s) in enumerate(b.items())}, "ig")
    figure = plot_layer_importance(a, kind="bar", top_k=3)
    bars = figure.axes[0].patches
    assert [bar.get_width() for bar in bars] == [a[n] for n in a.names]
    assert sum(bar.get_facecolor()[0] > 0.5 for bar in bars) == 3  # the top 3 in red
    figure.savefig(tmp_path / "bar.png")
    comparison = plot_comparison(a, b)
    assert f"{a.spearman(b):.3f}" in comparison._suptitle.get_text()
    comparison.savefig(tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").stat().st_size > 1000


def test_bad_plot_arguments_are_refused() -> None:
    scores = _swin_like(1, 3)
    with pytest.raises(ValueError, match="kind must be one of"):
        plot_layer_importance(scores, kind="pie")
    with pytest.raises(TypeError, match="LayerScores"):
        plot_layer_importance({"a": 1.0})
    with pytest.raises(ValueError, match="k must be"):
        plot_layer_importance(scores, top_k=1000)
    with pytest.raises(ValueError, match="log=True needs scores > 0"):
        plot_layer_importance(LayerScores({"a": 0.0, "b": 1.0}, "x"), log=True)
    with pytest.raises(TypeError, match="b must be LayerScores"):
        plot_comparison(scores, None)
