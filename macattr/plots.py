"""Figures of per-layer importance: the depth profile, the block × role heatmap, a bar chart, and comparisons.

- ``kind="profile"``: score against depth (the order in which the layers run),
  one stem per layer, residual groups shaded, the top-k marked and named in a
  legend; several scorings on one profile, one colour each. Readable from 20
  to 300 layers on a page.
- ``kind="heatmap"``: rows are blocks, columns the layer's role in its block,
  colour the score (like RAM's Fig. 14).
- ``kind="bar"``: one bar per layer, for small networks; beyond 60 layers the
  profile is drawn instead.
- [`plot_comparison()`][macattr.plots.plot_comparison]: two or more scorings,
  their heatmaps (or profiles) on one colour scale and the matrices of Spearman,
  Kendall and top-k overlap between every pair.

A layer name is split into its *block* (everything up to the last numeric part
that is not the final part, e.g. ``layers.0.residual_group.blocks.2``) and its
*role* inside the block (the rest, e.g. ``attn.qkv``); its *group* is the name
up to the first numeric part (``layers.0``). Every function returns a
``matplotlib.figure.Figure`` made without pyplot, so the backend is never
touched and a notebook shows the returned figure once; save it by extension
(PNG, SVG, PDF). Colours read in grey and for colour-blind readers (viridis,
and the Okabe–Ito palette for methods).
"""

from __future__ import annotations

import textwrap
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from macattr.ranking.methods import get_method, label_of
from macattr.scores import LayerScores, agreement
from macattr.vocabulary import COMPARE_KINDS, FIGURE_KINDS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

_BAR_LIMIT = 60
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")  # Okabe–Ito
_MARK = "#D55E00"
_STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "svg.fonttype": "none", "pdf.fonttype": 42}  # fmt: skip
TopK = Union[None, int, float]


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


def group_of(name: str) -> str:
    """The residual group of a layer: its name up to the first numeric part, ``(top)`` without one.

    Examples:
        >>> group_of("layers.2.blocks.1.attn.qkv"), group_of("conv_last")
        ('layers.2', '(top)')
    """
    parts = name.split(".")
    numeric = [i for i, part in enumerate(parts[:-1]) if part.isdigit()]
    return ".".join(parts[: numeric[0] + 1]) if numeric else "(top)"


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


def describe(scores: LayerScores) -> str:
    """The method and the settings that matter, for titles: ``MAC, 70 images, N = 200, r = 0.5``.

    Examples:
        >>> config = {"n_steps": 200, "path": {"type": "MaskAttributionPath", "mask_ratio": 0.5}}
        >>> describe(LayerScores({"a": 1.0}, "mac", config, images=70))
        'MAC, 70 images, N = 200, r = 0.5'
        >>> describe(LayerScores({"a": 1.0}, "conductance", {"n_steps": 50, "path": {"type": "BlurPath"}}))
        'conductance, N = 50, BlurPath'
    """
    parts = [label_of(scores.method)]
    if scores.images:
        parts.append(f"{scores.images} image{'s' if scores.images != 1 else ''}")
    if "n_steps" in scores.config:
        parts.append(f"N = {scores.config['n_steps']}")
    path = scores.config.get("path")
    if path is None and scores.method == "mac" and "mask_ratio" in scores.config:  # a file of macattr 0.2
        path = {"type": "MaskAttributionPath", "mask_ratio": scores.config["mask_ratio"]}
    if isinstance(path, dict) and path.get("type") == "MaskAttributionPath":
        parts.append(f"r = {path['mask_ratio']:g}")
    elif isinstance(path, dict) and path.get("type") not in (None, "LinearPath"):
        parts.append(str(path["type"]))
    return ", ".join(parts)


def score_label(scores: LayerScores) -> str:
    """What a score is, for axis labels.

    Examples:
        >>> score_label(LayerScores({"a": 1.0}, "gradnorm"))
        'score (sum over images of ‖∇θ L‖ / ‖θ‖)'
    """
    try:
        return f"score ({get_method(scores.method).score})"
    except ValueError:  # a method not registered here
        return "score"


def _top(scores: LayerScores, marked) -> str:
    """``top 4`` and, when the scores know the parameter counts, the share of parameters those layers train."""
    label = f"top {len(marked)}"
    if scores.parameters is not None:
        label += f" ({100 * scores.share(list(marked)):.1f} % of the parameters)"
    return label


def wants_log(values: np.ndarray) -> bool:
    """Whether a log scale reads better: all values > 0 and spanning more than two decades."""
    finite = values[np.isfinite(values)]
    return bool(finite.size and finite.min() > 0 and finite.max() > 100 * finite.min())


def _sets(scores: Union[LayerScores, Sequence[LayerScores]]) -> List[LayerScores]:
    sets = [scores] if isinstance(scores, LayerScores) else list(scores) if isinstance(scores, (list, tuple)) else []
    if not sets or not all(isinstance(s, LayerScores) for s in sets):
        raise TypeError(f"scores must be LayerScores or a list of them, got {type(scores).__name__}")
    return sets


def _new_axes(ax: Optional[Axes], width: float, height: float) -> Tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure (not registered with pyplot, so no backend is touched)."""
    from matplotlib.figure import Figure

    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def plot_layer_importance(
    scores: Union[LayerScores, Sequence[LayerScores]],
    kind: str = "heatmap",
    top_k: TopK = None,
    ax: Optional[Axes] = None,
    log: Optional[bool] = None,
    title: Optional[str] = None,
) -> Figure:
    """Plot per-layer importance and return the figure.

    Args:
        scores: from [`rank_layers()`][macattr.ranking.rank_layers]; for
            ``kind="profile"`` also a list of them (one colour each, each
            divided by its highest score).
        kind: "profile", "heatmap" or "bar" (see the module description); a
            bar chart of more than 60 layers is drawn as a profile, with a warning.
        top_k: mark the top-k layers (fraction or count): named in the
            profile's legend, outlined in the heatmap, coloured in the bar chart.
        ax: draw into this axes instead of a new figure.
        log: logarithmic scale (scores must be > 0); ``None`` chooses it when
            all scores are > 0 and span more than two decades.
        title: the axes title (default: the method and the settings that matter).

    Examples:
        >>> scores = LayerScores({"b.0.conv1": 1.0, "b.0.conv2": 3.0, "b.1.conv1": 2.0, "b.1.conv2": 0.5}, "mac")
        >>> figure = plot_layer_importance(scores, top_k=1)
        >>> figure.axes[0].get_title()
        'MAC layer importance, top 1 outlined'
        >>> profile = plot_layer_importance(scores, kind="profile", top_k=1)
        >>> profile.axes[0].get_xlabel()
        'depth (order in which the layers run)'
    """
    from matplotlib import rc_context

    sets = _sets(scores)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if len(sets) > 1 and kind != "profile":
        raise ValueError(f"several scorings go on one figure only with kind='profile', got kind={kind!r}")
    if kind == "bar" and len(sets[0]) > _BAR_LIMIT:
        warnings.warn(f"a bar chart of {len(sets[0])} layers cannot be read; drawing the depth profile instead",
                      UserWarning, stacklevel=2)  # fmt: skip
        kind = "profile"
    marked = [s.top_k(top_k) if top_k is not None else [] for s in sets]
    values = np.concatenate([np.asarray(list(s.values())) for s in sets])
    if log is None:
        log = wants_log(values)
    if log and values.min() <= 0:
        raise ValueError("log=True needs scores > 0")
    with rc_context(_STYLE):
        return KINDS[kind](sets, marked, ax, log, title)


def _heatmap(sets: List[LayerScores], marked: List[List[str]], ax: Optional[Axes], log: bool,
             title: Optional[str]) -> Figure:  # fmt: skip
    return _draw_heatmap(sets[0], set(marked[0]), ax, log, title)


def _draw_heatmap(
    scores: LayerScores, marked: set, ax: Optional[Axes], log: bool, title: Optional[str],
    norm: Optional[Normalize] = None, colorbar: bool = True,
) -> Figure:  # fmt: skip
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.patches import Rectangle

    rows, cols, matrix = layer_grid(scores)
    fig, ax = _new_axes(ax, min(4 + 0.42 * len(cols), 12), min(2.5 + 0.2 * len(rows), 11))
    finite = matrix[np.isfinite(matrix)]
    if norm is None:
        norm = LogNorm(finite.min(), finite.max()) if log else Normalize(min(0.0, finite.min()), finite.max())
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
    fontsize = max(5, min(8, 260 / max(len(rows), len(cols), 1)))
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=fontsize)
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize)
    ax.set_xlabel("layer role in block")
    ax.set_ylabel("block (in depth order)")
    for name in (n for n in scores.names if n in marked):  # depth order: the same drawing in every process
        block, role = block_and_role(name)
        ax.add_patch(Rectangle((cols.index(role) - 0.5, rows.index(block) - 0.5), 1, 1, fill=False, edgecolor=_MARK,
                               lw=1.6))  # fmt: skip
    if colorbar:
        fig.colorbar(image, ax=ax, label=textwrap.fill(score_label(scores), 40))  # wrapped: it fits the figure
    ax.set_title((title or f"{describe(scores)} layer importance") + (f", {_top(scores, marked)} outlined"
                                                                       if marked else ""))  # fmt: skip
    return fig


def _bars(sets: List[LayerScores], marked: List[List[str]], ax: Optional[Axes], log: bool,
          title: Optional[str]) -> Figure:  # fmt: skip
    scores, marked = sets[0], set(marked[0])
    names = scores.names
    fig, ax = _new_axes(ax, 7, min(1.6 + 0.16 * len(names), 11))
    colours = [_MARK if name in marked else _PALETTE[0] for name in names]
    ax.barh(range(len(names)), [scores[n] for n in names], color=colours, log=log)
    ax.set_yticks(range(len(names)), names, fontsize=max(5, min(8, 500 / len(names))))
    ax.invert_yaxis()
    ax.set_xlabel(score_label(scores))
    ax.set_ylabel("layer (in depth order)")
    if marked:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=_MARK, label=_top(scores, marked)), Patch(color=_PALETTE[0], label="other")],
                  loc="lower right")  # fmt: skip
    ax.set_title(title or f"{describe(scores)} layer importance")
    return fig


def _group_spans(names: List[str]) -> List[Tuple[str, int, int]]:
    """(group, first depth, last depth) for each run of consecutive layers of one group."""
    spans: List[Tuple[str, int, int]] = []
    for depth, name in enumerate(names):
        group = group_of(name)
        if spans and spans[-1][0] == group:
            spans[-1] = (group, spans[-1][1], depth)
        else:
            spans.append((group, depth, depth))
    return spans


def _profile(sets: List[LayerScores], marked: List[List[str]], ax: Optional[Axes], log: bool,
             title: Optional[str]) -> Figure:  # fmt: skip
    from matplotlib.lines import Line2D

    names = sets[0].names
    depth = {name: i for i, name in enumerate(names)}
    count, several = len(names), len(sets) > 1
    legend_rows = 0 if several else -(-len(marked[0]) // 4)
    fig, ax = _new_axes(ax, 10, min(4 + 0.16 * legend_rows, 6))
    for i, (_, first, last) in enumerate(_group_spans(names)):
        if i % 2:
            ax.axvspan(first - 0.5, last + 0.5, color="0.92", lw=0, zorder=0)
    x = np.arange(count)
    size = 14 if count <= 60 else 6
    handles, with_bars, headroom = [], False, 0.0  # headroom: points above the highest value for the numbers
    for index, (scores, top) in enumerate(zip(sets, marked)):
        colour = _PALETTE[index % len(_PALETTE)]
        y = np.array([scores.get(n, np.nan) for n in names], dtype=float)
        scale = (np.nanmax(y) or 1.0) if several else 1.0
        y = y / scale
        base = np.nanmin(y[y > 0]) / 2 if log else 0.0
        bars = _intervals(scores, names)
        with_bars |= bars is not None
        if bars is not None:
            ax.errorbar(x, y, yerr=np.abs(bars / scale - y), fmt="none", ecolor=colour, elinewidth=0.7, capsize=1.5,
                        alpha=0.7, zorder=2)  # fmt: skip
        ax.vlines(x, base, y, color=colour, lw=0.9 if count <= 60 else 0.5, alpha=0.5 if several else 0.8, zorder=2)
        ax.scatter(x, y, s=size, color=colour, zorder=3, label=describe(scores))
        handles.append(Line2D([], [], color=colour, marker="o", lw=0.9, label=describe(scores)))
        where = [depth[n] for n in top if n in depth]
        ring = colour if several else _MARK
        ax.scatter(x[where], y[where], s=size * 4, facecolors="none", edgecolors=ring, linewidths=1.4, zorder=4)
        if not several:
            lifts = _label_lifts(ax, where, [y[point] for point in where], y, count, log)
            for rank, (point, lift) in enumerate(zip(where, lifts), start=1):
                ax.annotate(str(rank), (point, y[point]), xytext=(0, 5 + lift), textcoords="offset points",
                            ha="center", fontsize=7, color=_MARK)  # fmt: skip
            headroom = max(headroom, max(lifts, default=0.0) + 14)
    if log:
        ax.set_yscale("log")
    if headroom:
        low, high = ax.get_ylim()
        extra = headroom / _plot_size(ax)[1]
        ax.set_ylim(low, high * (high / low) ** extra if log else high + (high - low) * extra)
    ax.set_xlim(-1, count)
    if count <= 40:
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("depth (order in which the layers run)" + ("; bars: 95 % bootstrap intervals over the images"
                                                              if with_bars else ""))  # fmt: skip
    label = "score / highest score of its method" if several else score_label(sets[0])
    ax.set_ylabel(textwrap.fill(label, 32))  # two short lines fit the profile's height
    if several:
        ax.legend(handles=handles, loc="best")
    elif marked[0]:
        from matplotlib.patches import Patch

        ring = Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor=_MARK, linestyle="none")
        entries = [Patch(visible=False, label=f"{rank}. {name}") for rank, name in enumerate(marked[0], start=1)]
        labels = [_top(sets[0], marked[0]), *(e.get_label() for e in entries)]
        fig.legend(handles=_row_major([ring, *entries], 4), labels=_row_major(labels, 4), loc="outside lower center",
                   ncol=4, handlelength=1.0, handletextpad=0.4, fontsize=7, frameon=False)  # fmt: skip
    label = title or (f"{describe(sets[0])} layer importance by depth" if not several else "layer importance by depth")
    ax.set_title(label + ("; shaded: alternate residual groups" if len(_group_spans(names)) > 2 else ""))
    return fig


def _label_lifts(ax: Axes, x: List[int], y: List[float], every: np.ndarray, count: int, log: bool) -> List[float]:
    """How far (points) to raise each rank number above its point so that no two numbers overlap.

    ``x``, ``y``: the marked points in rank order; ``every``: all the profile's values (for the vertical scale);
    ``count``: the number of layers. Rank 1 keeps its place; each later number takes the lowest of the levels
    (7.5 points apart) where it overlaps no number placed before it, judged on the axes' size in points.
    """
    width, height = _plot_size(ax)
    finite = every[np.isfinite(every) & (every > 0)] if log else every[np.isfinite(every)]
    scale = np.log10 if log else (lambda v: v)
    low, high = (float(scale(finite.min())), float(scale(finite.max()))) if finite.size else (0.0, 1.0)
    per_unit = height / ((high - low) or 1.0)
    placed: List[Tuple[float, float]] = []  # (x, y) of the numbers drawn, in points
    lifts = []
    for point, value in zip(x, y):
        across = point * width / max(count, 1)
        up = (float(scale(value)) - low) * per_unit if np.isfinite(value) and (value > 0 or not log) else 0.0
        lift = 0.0
        while any(abs(across - a) < 9 and abs(up + lift - b) < 7.5 for a, b in placed):
            lift += 7.5
        placed.append((across, up + lift))
        lifts.append(lift)
    return lifts


def _plot_size(ax: Axes) -> Tuple[float, float]:
    """The axes' plotting area in points (width, height), as the layout will about leave it."""
    figure_width, figure_height = ax.figure.get_size_inches()
    box = ax.get_position()
    return 0.85 * box.width * figure_width * 72, 0.75 * box.height * figure_height * 72


def _row_major(items: List[Any], columns: int) -> List[Any]:
    """``items`` reordered so that a legend of ``columns`` columns, which matplotlib fills column by column,
    reads them row by row.

    Examples:
        >>> _row_major([1, 2, 3, 4, 5], 4)  # rows: 1 2 3 4 / 5
        [1, 5, 2, 3, 4]
    """
    rows = -(-len(items) // columns)
    grid = [[items[r * columns + c] for r in range(rows) if r * columns + c < len(items)] for c in range(columns)]
    return [item for column in grid for item in column]


def _intervals(scores: LayerScores, names: List[str]) -> Optional[np.ndarray]:
    """(2, layers) the 95 % bootstrap intervals of the scores over their images, in ``names`` order (NaN for a
    layer they lack); None where the scores cannot be bootstrapped (``LayerScores.bootstrappable``)."""
    from macattr.confidence import score_intervals

    if not scores.bootstrappable:
        return None
    low, high = score_intervals(scores.per_image, scores.groups, sources=scores.sources)
    where = {name: i for i, name in enumerate(scores.names)}
    return np.array([[bound[where[n]] if n in where else np.nan for n in names] for bound in (low, high)])


KINDS: Dict[str, Callable[..., Figure]] = dict(zip(FIGURE_KINDS, (_profile, _heatmap, _bars)))
"""Figure kinds of ``plot_layer_importance``: name → drawing function ``(sets, marked, ax, log, title) → Figure``
(only ``"profile"`` draws several scorings)."""


def plot_comparison(
    *scores: Union[LayerScores, Sequence[LayerScores]],
    kind: str = "heatmap",
    top_k: TopK = 0.1,
    labels: Optional[Sequence[str]] = None,
    allow_partial: bool = False,
) -> Figure:
    """Two or more scorings of one model: each drawn on one shared colour scale, and their agreement.

    Args:
        *scores: two or more ``LayerScores`` (or one list of them).
        kind: "heatmap" (one heatmap per scoring, each divided by its highest
            score so that one colour scale serves all) or "profile" (all on one
            profile).
        top_k: the top-k marked in each and compared by the overlap matrix.
        labels: names of the scorings (default: their methods).
        allow_partial: compare scorings that share fewer than half of either's
            layers (by default that is refused: they are not of one model).

    Returns:
        A figure with the scorings and three matrices (Spearman ρ, Kendall τ
        and the Jaccard overlap of the top-k sets) for every pair, over the
        layers the pair shares (their number is printed below).

    Examples:
        >>> a = LayerScores({"x": 1.0, "y": 2.0, "z": 3.0}, "mac")
        >>> b = LayerScores({"x": 1.0, "y": 3.0, "z": 2.0}, "ig")
        >>> c = LayerScores({"x": 3.0, "y": 2.0, "z": 1.0}, "gradnorm")
        >>> len(plot_comparison(a, b, c, top_k=1).axes)  # three heatmaps, a colour bar, three matrices
        7
    """
    from matplotlib import rc_context
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    sets = _sets(scores[0] if len(scores) == 1 else list(scores))
    if len(sets) < 2:
        raise ValueError("plot_comparison needs at least two scorings")
    if kind not in COMPARE_KINDS:
        raise ValueError(f"kind must be one of {list(COMPARE_KINDS)}, got {kind!r}")
    if not allow_partial:
        check_common(sets, labels or [s.method for s in sets])
    result = agreement(sets, top_k if top_k is not None else 0.1, labels)
    relative = [LayerScores({n: v / (max(s.values()) or 1.0) for n, v in s.items()}, s.method, s.config, s.images)
                for s in sets]  # fmt: skip
    values = np.concatenate([np.asarray(list(s.values())) for s in relative])
    positive = values[values > 0]
    with rc_context(_STYLE):
        columns = min(len(sets), 3) if kind == "heatmap" else 1
        rows = -(-len(sets) // columns) if kind == "heatmap" else 1
        blocks = max(len(layer_grid(s)[0]) for s in sets) if kind == "heatmap" else 0
        row_height = max(3.6, 1.6 + 0.11 * blocks)  # inches: about 8 points a block label, so none overlap
        fig = Figure(figsize=(min(4.2 * max(columns, 3), 13), row_height * rows + 3.2), layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=[row_height * rows, 3.2])
        if kind == "profile":
            plot_layer_importance(sets, kind="profile", top_k=top_k, ax=top.add_subplot())
        else:
            log = wants_log(values)
            norm: Normalize = LogNorm(positive.min(), 1.0) if log else Normalize(0.0, 1.0)
            axes = top.subplots(rows, columns, squeeze=False).flatten()
            for ax, scores_, label in zip(axes, relative, result.labels):
                _draw_heatmap(scores_, set(scores_.top_k(top_k)) if top_k else set(), ax, log, label, norm, False)
            for ax in axes[len(sets) :]:
                ax.set_visible(False)
            top.colorbar(axes[0].images[0], ax=list(axes[: len(sets)]), label="score / highest score of its method")
        _agreement_matrices(bottom, result)
    return fig


def check_common(sets: Sequence[LayerScores], labels: Sequence[str]) -> None:
    """Refuse pairs of scorings that share fewer than half of either's layers (scores of different models)."""
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            common = len(sets[i].common_layers(sets[j]))
            if 2 * common < max(len(sets[i]), len(sets[j])):
                raise ValueError(
                    f"{labels[i]} ({len(sets[i])} layers) and {labels[j]} ({len(sets[j])} layers) share only "
                    f"{common} layers, fewer than half of each: they look like scores of different models; "
                    "pass allow_partial=True (--allow-partial) to compare the shared layers anyway"
                )


def _agreement_matrices(fig: Any, result: Any) -> None:
    """Three annotated (n, n) matrices: Spearman, Kendall, top-k Jaccard; the layer counts beneath."""
    axes = fig.subplots(1, 3)
    tables: Dict[str, np.ndarray] = {"Spearman ρ": result.spearman, "Kendall τ": result.kendall,
                                     f"top-k overlap (Jaccard, k={result.k})": result.overlap}  # fmt: skip
    n = len(result.labels)
    for ax, (name, table) in zip(axes, tables.items()):
        ax.imshow(table, cmap="cividis", vmin=-1 if "overlap" not in name else 0, vmax=1)
        ax.set_xticks(range(n), result.labels, rotation=45, ha="right")
        ax.set_yticks(range(n), result.labels)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if table[i, j] < 0.5 else "black")  # fmt: skip
        ax.set_title(name)
    counts = sorted({int(result.compared[i, j]) for i in range(n) for j in range(n) if i != j})
    shared = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    fig.suptitle(f"agreement over the layers each pair shares ({shared} layers compared)", fontsize=10)


__all__ = [
    "COMPARE_KINDS",
    "KINDS",
    "block_and_role",
    "check_common",
    "describe",
    "group_of",
    "layer_grid",
    "plot_comparison",
    "plot_layer_importance",
    "score_label",
    "wants_log",
]
