"""Per-layer importance plots: a block × role heatmap (like RAM's Fig. 14) and a bar chart.

A layer name is split into its *block* (everything up to the last numeric part
that is not the final part, e.g. ``layers.0.residual_group.blocks.2``) and its
*role* inside the block (the rest, e.g. ``attn.qkv``). Names without such a part
go to the block of their parent (``conv_first`` → block ``(top)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple, Union

import numpy as np

from macattr.scores import LayerScores, resolve_k

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

KINDS = ("heatmap", "bar")


def block_and_role(name: str) -> Tuple[str, str]:
    """Split a module name into (block, role): ``a.3.b.c`` → (``a.3``, ``b.c``); ``body.3`` → (``body``, ``3``).

    Examples:
        >>> block_and_role("layers.0.residual_group.blocks.2.attn.qkv")
        ('layers.0.residual_group.blocks.2', 'attn.qkv')
        >>> block_and_role("conv_first")
        ('(top)', 'conv_first')
    """
    parts = name.split(".")
    numeric = [i for i, part in enumerate(parts[:-1]) if part.isdigit()]
    if numeric:
        cut = numeric[-1] + 1
        return ".".join(parts[:cut]), ".".join(parts[cut:])
    return (".".join(parts[:-1]) or "(top)"), parts[-1]


def layer_grid(scores: LayerScores) -> Tuple[List[str], List[str], np.ndarray]:
    """Blocks (rows), roles (columns), both in depth order, and the (rows, cols) score matrix (NaN where empty).

    Examples:
        >>> rows, cols, matrix = layer_grid(LayerScores({"b.0.conv": 1.0, "b.1.conv": 2.0}, "mac"))
        >>> rows, cols, matrix.tolist()
        (['b.0', 'b.1'], ['conv'], [[1.0], [2.0]])
    """
    pairs = [block_and_role(name) for name in scores.names]
    rows = list(dict.fromkeys(block for block, _ in pairs))
    cols = list(dict.fromkeys(role for _, role in pairs))
    matrix = np.full((len(rows), len(cols)), np.nan)
    for (block, role), name in zip(pairs, scores.names):
        matrix[rows.index(block), cols.index(role)] = scores[name]
    return rows, cols, matrix


def _check(scores: LayerScores, kind: str, top_k: Union[None, int, float]) -> List[str]:
    if not isinstance(scores, LayerScores):
        raise TypeError(f"scores must be LayerScores, got {type(scores).__name__}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    return [] if top_k is None else scores.top_k(top_k)


def plot_layer_importance(
    scores: LayerScores,
    kind: str = "heatmap",
    top_k: Union[None, int, float] = None,
    ax: Optional[Axes] = None,
    log: Optional[bool] = None,
    title: Optional[str] = None,
) -> Figure:
    """Plot per-layer importance and return the figure.

    Args:
        scores: from [`rank_layers()`][macattr.ranking.rank_layers].
        kind: "heatmap" (rows: blocks, columns: roles, colour: score) or "bar"
            (one bar per layer in depth order).
        top_k: mark the top-k layers (fraction or count), outlined in the
            heatmap and coloured in the bar chart.
        ax: draw into this axes instead of a new figure.
        log: logarithmic colour scale / axis (scores must be > 0); ``None``
            chooses it when all scores are > 0 and span more than a factor 20.
        title: the axes title (default: the method and the number of images).

    Examples:
        >>> scores = LayerScores({"b.0.conv1": 1.0, "b.0.conv2": 3.0, "b.1.conv1": 2.0, "b.1.conv2": 0.5}, "mac")
        >>> figure = plot_layer_importance(scores, top_k=1)
        >>> figure.axes[0].get_title()
        'MAC layer importance (0 images), top 1 outlined'
    """
    marked = set(_check(scores, kind, top_k))
    low, high = min(scores.values()), max(scores.values())
    if log is None:
        log = low > 0 and high > 20 * low
    if log and low <= 0:
        raise ValueError("log=True needs scores > 0")
    title = title if title is not None else f"{scores.method.upper()} layer importance ({scores.images} images)"
    if kind == "heatmap":
        return _heatmap(scores, marked, ax, log, title)
    return _bars(scores, marked, ax, log, title)


def _new_axes(ax: Optional[Axes], width: float, height: float) -> Tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure (not registered with pyplot, so no backend is touched)."""
    from matplotlib.figure import Figure

    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _heatmap(scores: LayerScores, marked: set, ax: Optional[Axes], log: bool, title: str) -> Figure:
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.patches import Rectangle

    rows, cols, matrix = layer_grid(scores)
    fig, ax = _new_axes(ax, min(4 + 0.45 * len(cols), 22), min(2.5 + 0.28 * len(rows), 30))
    finite = matrix[np.isfinite(matrix)]
    norm = LogNorm(finite.min(), finite.max()) if log else Normalize(min(0.0, finite.min()), finite.max())
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
    fontsize = max(4, min(9, 300 / max(len(rows), len(cols), 1)))
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=fontsize)
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize)
    ax.set_xlabel("layer role in block")
    ax.set_ylabel("block")
    for name in marked:
        block, role = block_and_role(name)
        ax.add_patch(
            Rectangle((cols.index(role) - 0.5, rows.index(block) - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5)
        )
    fig.colorbar(image, ax=ax, label="score (sum over images of mean |attribution|)")
    ax.set_title(title + (f", top {len(marked)} outlined" if marked else ""))
    return fig


def _bars(scores: LayerScores, marked: set, ax: Optional[Axes], log: bool, title: str) -> Figure:
    names = scores.names
    fig, ax = _new_axes(ax, 8, min(2 + 0.18 * len(names), 40))
    colours = ["tab:red" if name in marked else "tab:blue" for name in names]
    ax.barh(range(len(names)), [scores[n] for n in names], color=colours, log=log)
    ax.set_yticks(range(len(names)), names, fontsize=max(4, min(9, 600 / len(names))))
    ax.invert_yaxis()
    ax.set_xlabel("score")
    ax.set_title(title + (f", top {len(marked)} in red" if marked else ""))
    return fig


def plot_comparison(
    a: LayerScores, b: LayerScores, kind: str = "heatmap", top_k: Union[None, int, float] = 0.1
) -> Figure:
    """Two scorings side by side, titled with their Spearman and Kendall rank correlations.

    Examples:
        >>> a = LayerScores({"x": 1.0, "y": 2.0, "z": 3.0}, "mac")
        >>> b = LayerScores({"x": 1.0, "y": 3.0, "z": 2.0}, "ig")
        >>> len(plot_comparison(a, b, kind="bar", top_k=1).axes)
        2
    """
    for label, scores in (("a", a), ("b", b)):
        if not isinstance(scores, LayerScores):
            raise TypeError(f"{label} must be LayerScores, got {type(scores).__name__}")
    if top_k is not None:
        resolve_k(top_k, min(len(a), len(b)))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 7), layout="constrained")
    axes = fig.subplots(1, 2)
    plot_layer_importance(a, kind=kind, top_k=top_k, ax=axes[0])
    plot_layer_importance(b, kind=kind, top_k=top_k, ax=axes[1])
    fig.suptitle(
        f"{a.method} vs {b.method}: Spearman ρ = {a.spearman(b):.3f}, Kendall τ = {a.kendall(b):.3f}"
        + (f", top-k overlap {len(set(a.top_k(top_k)) & set(b.top_k(top_k)))}/{len(a.top_k(top_k))}" if top_k else "")
    )
    return fig
