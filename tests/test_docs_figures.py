"""The documentation's figures are what their results files draw today (``python docs/figures.py`` redraws them),
and the 263-layer figures keep their labels apart."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
from matplotlib.image import imread

import macattr

ROOT = Path(__file__).resolve().parents[1]


def _figures():
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_published_figure_is_what_its_results_file_draws(tmp_path: Path) -> None:
    figures = _figures()
    drawn = figures.draw(tmp_path / "drawn")
    published = {path.name for path in (ROOT / "docs" / "img").glob("*.png")} - {
        f"scaling_{name}.png" for name in ("layers", "n_steps", "size")
    }  # the scaling figures are timings, drawn by the benchmark that measures them
    assert {path.name for path in drawn} == published
    assert figures.differing(drawn, ROOT / "docs" / "img") == []


def test_a_figure_that_no_longer_matches_is_named(tmp_path: Path) -> None:
    figures = _figures()
    drawn = figures.draw(tmp_path / "drawn")
    published = tmp_path / "published"
    shutil.copytree(ROOT / "docs" / "img", published)
    pixels = imread(published / "demo_heatmap.png")
    pixels[10:20, 10:20, :3] = 1 - pixels[10:20, 10:20, :3]
    from matplotlib.image import imsave

    imsave(published / "demo_heatmap.png", pixels)
    (published / "convergence.png").unlink()
    assert figures.differing(drawn, published) == ["demo_heatmap.png", "convergence.png"]


def _renderer(figure):
    """The figure drawn on an Agg canvas, and that canvas's renderer (for the texts' boxes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def test_the_rank_numbers_of_a_263_layer_profile_do_not_overlap() -> None:
    scores = macattr.LayerScores.load(ROOT / "docs" / "results" / "paper_swinir_random_mac.json")
    figure = macattr.plot_layer_importance(scores, kind="profile", top_k=0.1)
    renderer = _renderer(figure)
    boxes = [text.get_window_extent(renderer) for text in figure.axes[0].texts]  # the rank numbers
    assert len(boxes) == len(scores.top_k(0.1)) > 20
    overlapping = [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
    assert overlapping == []
    top = figure.axes[0].get_window_extent(renderer)
    assert all(box.y1 <= top.y1 for box in boxes)  # inside the axes, under the title


def test_the_block_labels_of_a_263_layer_comparison_do_not_overlap() -> None:
    sets = [macattr.LayerScores.load(ROOT / "docs" / "results" / f"paper_swinir_random_{m}.json")
            for m in ("mac", "ig", "gradnorm")]  # fmt: skip
    figure = macattr.plot_comparison(sets, top_k=0.1)
    renderer = _renderer(figure)
    labels = [label for label in figure.axes[0].get_yticklabels() if label.get_text()]
    assert len(labels) > 40
    boxes = sorted((label.get_window_extent(renderer) for label in labels), key=lambda box: box.y0)
    gaps = np.array([upper.y0 - lower.y1 for lower, upper in zip(boxes, boxes[1:])])
    assert (gaps >= 0).all()
