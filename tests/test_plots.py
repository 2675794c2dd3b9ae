"""Figures: their data read back (cells, points, marked layers), their size at 300 layers, comparisons, notebooks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from macattr import LayerScores, plot_comparison, plot_layer_importance
from macattr.plots import block_and_role, group_of, layer_grid
from macattr.scores import agreement

ROLES = ["norm1", "attn", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]


def _swin_like(n_groups: int, n_blocks: int, seed: int = 0, method: str = "mac") -> LayerScores:
    names = ["conv_first"]
    for g in range(n_groups):
        names += [f"layers.{g}.blocks.{b}.{r}" for b in range(n_blocks) for r in ROLES]
        names.append(f"layers.{g}.conv")
    names += ["norm", "conv_after_body", "conv_last"]
    rng = np.random.default_rng(seed)
    values = np.exp(rng.uniform(-6, 1, len(names)))  # three decades: the log scale
    config = {"n_steps": 200, "mask_ratio": 0.5}
    return LayerScores(dict(zip(names, values.tolist())), method, config, images=70)


def test_names_split_into_block_role_and_group() -> None:
    assert block_and_role("layers.0.residual_group.blocks.2.attn.qkv") == (
        "layers.0.residual_group.blocks.2",
        "attn.qkv",
    )
    assert block_and_role("layers.3.conv") == ("layers.3", "conv")
    assert block_and_role("conv_first") == ("(top)", "conv_first")
    assert block_and_role("body.3") == ("body", "3")
    assert group_of("layers.3.blocks.1.attn") == "layers.3" and group_of("norm") == "(top)"


@pytest.mark.parametrize("groups, blocks", [(1, 3), (6, 6)])
def test_heatmap_cells_match_the_scores(groups: int, blocks: int) -> None:
    scores = _swin_like(groups, blocks)
    figure = plot_layer_importance(scores, top_k=0.1)
    image = next(a for a in figure.axes[0].get_children() if isinstance(a, AxesImage))
    data = np.ma.filled(image.get_array(), np.nan)
    rows, cols, matrix = layer_grid(scores)
    np.testing.assert_array_equal(np.isnan(data), np.isnan(matrix))
    for name, score in scores.items():
        block, role = block_and_role(name)
        assert data[rows.index(block), cols.index(role)] == score
    outlined = {(p.get_x() + 0.5, p.get_y() + 0.5) for p in figure.axes[0].patches if isinstance(p, Rectangle)}
    expected = {(cols.index(block_and_role(n)[1]), rows.index(block_and_role(n)[0])) for n in scores.top_k(0.1)}
    assert outlined == expected
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == rows
    assert "MAC, 70 images, N = 200, r = 0.5" in figure.axes[0].get_title()
    assert figure.axes[0].images[0].norm.__class__.__name__ == "LogNorm"  # three decades: log scale chosen


@pytest.mark.parametrize("groups, blocks", [(1, 2), (6, 6)])
def test_profile_points_are_the_scores_in_depth_order_and_the_top_k_are_marked_and_named(
    groups: int, blocks: int
) -> None:
    scores = _swin_like(groups, blocks)
    figure = plot_layer_importance(scores, kind="profile", top_k=0.1)
    ax = figure.axes[0]
    points, rings = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(points.get_offsets()[:, 0], np.arange(len(scores)))
    np.testing.assert_array_equal(points.get_offsets()[:, 1], [scores[n] for n in scores.names])
    top = scores.top_k(0.1)
    assert [scores.names[int(x)] for x in rings.get_offsets()[:, 0]] == top
    stems = next(c for c in ax.collections if isinstance(c, LineCollection))
    assert len(stems.get_segments()) == len(scores)
    legend = figure.legends[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    boxes = [(t.get_window_extent(renderer), t.get_text()) for t in legend.get_texts()]
    reading = [text for box, text in sorted(boxes, key=lambda b: (-round(b[0].y0), b[0].x0))]  # rows, left to right
    assert reading[1:] == [f"{i}. {n}" for i, n in enumerate(top, start=1)]
    assert ax.get_yscale() == "log"
    width, height = figure.get_size_inches()
    assert width <= 12 and height <= 6
    if len(scores) > 250:
        figure.savefig(Path("/dev/null"), format="png")  # draws at 300 layers within the page


def test_several_scorings_on_one_profile_each_relative_to_its_best() -> None:
    mac, ig = _swin_like(2, 2, seed=0), _swin_like(2, 2, seed=1, method="ig")
    figure = plot_layer_importance([mac, ig], kind="profile", top_k=3)
    ax = figure.axes[0]
    collections = [c for c in ax.collections if isinstance(c, PathCollection)]
    mac_points, ig_points = collections[0], collections[2]
    np.testing.assert_allclose(mac_points.get_offsets()[:, 1], [mac[n] / max(mac.values()) for n in mac.names])
    np.testing.assert_allclose(ig_points.get_offsets()[:, 1], [ig[n] / max(ig.values()) for n in mac.names])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["MAC, 70 images, N = 200, r = 0.5", "internal influence, 70 images, N = 200"]
    with pytest.raises(ValueError, match="only with kind='profile'"):
        plot_layer_importance([mac, ig], kind="heatmap")


def test_bar_chart_for_small_networks_and_a_profile_beyond_sixty_layers() -> None:
    small = _swin_like(1, 2)
    figure = plot_layer_importance(small, kind="bar", top_k=3)
    bars = figure.axes[0].patches
    assert [bar.get_width() for bar in bars] == [small[n] for n in small.names]
    marked = [small.names[i] for i, bar in enumerate(bars) if bar.get_facecolor()[0] > 0.8]
    assert sorted(marked) == sorted(small.top_k(3))
    with pytest.warns(UserWarning, match="cannot be read; drawing the depth profile"):
        large = plot_layer_importance(_swin_like(4, 4), kind="bar", top_k=0.1)
    assert large.axes[0].get_xlabel() == "depth (order in which the layers run)"


def test_comparison_of_three_scorings_shares_one_colour_scale_and_shows_the_agreement() -> None:
    sets = [_swin_like(2, 2, seed=s, method=m) for s, m in enumerate(["mac", "ig", "gradnorm"])]
    figure = plot_comparison(*sets, top_k=0.1)
    titles = ("mac", "ig", "gradnorm")
    images = [ax.images[0] for ax in figure.axes if ax.images and ax.get_title().split(",")[0] in titles]
    assert len(images) == 3 and len({(im.norm.vmin, im.norm.vmax) for im in images}) == 1
    for image in images:
        data = np.ma.filled(image.get_array(), np.nan)
        assert np.nanmax(data) == 1.0  # each scoring relative to its best layer
    result = agreement(sets, 0.1)
    matrices = [ax for ax in figure.axes if ax.get_title().startswith(("Spearman", "Kendall", "top-k"))]
    for ax, table in zip(matrices, (result.spearman, result.kendall, result.overlap)):
        np.testing.assert_allclose(ax.images[0].get_array(), table)
        assert [t.get_text() for t in ax.texts][1] == f"{table[0, 1]:.2f}"
    assert f"({len(sets[0])} layers compared)" in figure.subfigs[1]._suptitle.get_text()
    profile = plot_comparison(sets, kind="profile")
    assert profile.subfigs[0].axes[0].get_xlabel().startswith("depth")


def test_comparisons_of_unrelated_scorings_are_refused() -> None:
    a = _swin_like(2, 2)
    b = LayerScores({"conv_first": 1.0, "conv_last": 4.0, "x": 2.0, "y": 3.0}, "ig")
    with pytest.raises(ValueError, match="share only 2 layers"):
        plot_comparison(a, b)
    assert plot_comparison(a, b, allow_partial=True, top_k=1) is not None


def test_figures_save_by_extension_and_never_touch_the_backend(tmp_path: Path) -> None:
    code = (
        "import sys, matplotlib; from macattr import LayerScores, plot_layer_importance; "
        "s = LayerScores({'a.0.x': 1.0, 'a.1.x': 2.0}, 'mac'); "
        "[plot_layer_importance(s, kind=k).savefig(sys.argv[1] + '/f.' + e) for k in ('profile', 'heatmap', 'bar') "
        "for e in ('png', 'svg', 'pdf')]; "
        "assert matplotlib.get_backend() == 'svg' and 'matplotlib.pyplot' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            env={"MPLBACKEND": "svg", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF" and b"<svg" in (tmp_path / "f.svg").read_bytes()


def test_notebooks_show_the_ten_best_layers_with_bars_of_their_scores() -> None:
    scores = _swin_like(1, 2)
    page = scores._repr_html_()
    assert page.count("<tr>") == 1 + 10 and scores.top_k(1)[0] in page
    widths = [int(w) for w in re.findall(r"width:(\d+)px", page)]
    best = scores.ranked()[0][1]
    assert widths == [round(100 * s / best) for _, s in scores.ranked()[:10]]


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
    with pytest.raises(TypeError, match="LayerScores"):
        plot_comparison(scores, None)
    with pytest.raises(ValueError, match="at least two"):
        plot_comparison(scores)
