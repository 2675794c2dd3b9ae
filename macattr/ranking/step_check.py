"""Is N large enough? The top k and the scores at N grid intervals against M = ⌊N / 2⌋, on a few images, with
the certificate of the step sum at N.

A step rule of order p (1 for "left" and "right", 2 for "trapezoid" on a smooth path) has an error that
shrinks as N^-p, so the difference between the scores at N and at M estimates the error at N (Richardson):
``|s_N − s_M| / ((N / M)^p − 1)``, which is ``|s_N − s_M| / (2^p − 1)`` for an even N. That estimate assumes
the sums already converge at the rule's order; where they do not (a start at which a normalisation layer is
singular, a mask path that reveals many pixels per step), N and N / 2 can agree while both are far from the
integral. So the verdict also needs the step sum's own certificate at N
([`LayerScores.certificate()`][macattr.scores.LayerScores.certificate]): every score's estimated error and every
image's completeness gap at the input. N is enough when the top k at M is the top k at N and all three are
within the tolerance.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Iterable, Iterator, List, Optional, Union

from torch import Tensor, nn

from macattr._checks import check_int
from macattr.ranking import UncertifiedWarning, rank_layers
from macattr.ranking.settings import RankSettings
from macattr.scores import LayerScores, check_tolerance
from macattr.segments import remedy

_ORDER = {"left": 1, "right": 1, "trapezoid": 2}  # a segment rule counts as order 2: a ReLU's kinks allow no more


@dataclass(frozen=True)
class StepCheck:
    """The comparison of the scores at ``n_steps`` and ``n_steps // 2`` on ``images`` images.

    Attributes:
        n_steps, rule, images: what was compared.
        top_k, top_k_at_half: the top k at N and at N / 2, best first.
        overlap: |top_k ∩ top_k_at_half| / |top_k|, in [0, 1].
        error: the largest Richardson estimate of a layer's relative error at N,
            max |s_N − s_M| / ((N / M)^p − 1) / |s_N| over the layers (M = ⌊N / 2⌋, p: the rule's order).
        estimate: the certificate's largest estimated relative error at N over the layers it judges.
        input_gap: the largest completeness gap at the input at N over the images.
        tolerance: the relative error that ``enough`` allows each of the three.
    """

    n_steps: int
    rule: str
    images: int
    top_k: List[str]
    top_k_at_half: List[str]
    overlap: float
    error: float
    estimate: float
    input_gap: float
    tolerance: float

    @property
    def enough(self) -> bool:
        """Whether the top k no longer moves between N / 2 and N and the scores at N are within ``tolerance`` by
        the Richardson estimate, the certificate's estimate and the completeness gap at the input."""
        return self.overlap == 1.0 and max(self.error, self.estimate, self.input_gap) <= self.tolerance

    def summary(self) -> str:
        verdict = "converged" if self.enough else "NOT converged"
        top = "the same top k" if self.overlap == 1.0 else f"top-k overlap {self.overlap:.2f}: N is too small"
        return (f"N = {self.n_steps} against N = {self.n_steps // 2} ({self.rule} rule, {self.images} images): "
                f"{verdict} to {100 * self.tolerance:g} %: {top}; largest estimated score error at N "
                f"{100 * self.error:.3g} % (N against N / 2), {100 * self.estimate:.3g} % (the step sum's own "
                f"estimate); completeness gap at the input {100 * self.input_gap:.3g} %")  # fmt: skip


def check_steps(
    model: nn.Module,
    loader: Iterable[Any],
    settings: Optional[RankSettings] = None,
    k: Union[int, float] = 0.1,
    images: int = 4,
    warn: bool = True,
    budget: str = "layers",
    tolerance: float = 0.1,
    **rank_options: Any,
) -> StepCheck:
    """Rank the first ``images`` images of ``loader`` at ``settings.n_steps`` and at half of it (rounded down)
    and compare.

    Warns (``UserWarning``, unless ``warn=False``) when N is not enough (see ``StepCheck.enough``): the top ``k``
    layers (counted in ``budget``, as in ``LayerScores.top_k``) differ, or an error estimate or the completeness
    gap at the input is over ``tolerance`` (a relative error in (0, 1)); the warning names the remedies.
    ``rank_options`` go to [`rank_layers()`][macattr.ranking.rank_layers] (``layers``, ``group``, ``device``,
    ...), not the fields of ``settings``. Costs 1.5 × N forward and backward passes per image (a segment rule
    ``gauss<m>``: 1.5 × N (m + 1)).

    Examples:
        >>> import torch
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
        >>> check = check_steps(model, [torch.rand(2, 3, 8, 8)], RankSettings(n_steps=16), k=1, images=2, warn=False)
        >>> check.n_steps, check.images, len(check.top_k)
        (16, 2, 1)
    """
    settings = settings if settings is not None else RankSettings()
    if not isinstance(settings, RankSettings):
        raise TypeError(f"settings must be RankSettings or None, got {type(settings).__name__}")
    if not settings.method_record.step_rule:
        raise ValueError(f"method={settings.method!r} sums no steps along a path; check_steps is for "
                         "'mac' and 'conductance'")  # fmt: skip
    check_int("images", images, 1)
    check_int("n_steps", settings.n_steps, 2)
    check_tolerance(tolerance)
    setting_names = [f.name for f in fields(RankSettings) if f.name in rank_options]
    if setting_names:
        raise TypeError(f"check_steps takes the ranking's settings as settings=, not as {setting_names} (they would "
                        "change both runs): pass RankSettings(...) with them")  # fmt: skip
    rank_options = {"progress": False, **rank_options}
    steps = (settings.n_steps, settings.n_steps // 2)
    # both runs read the same batches, also from an iterator or a shuffling DataLoader (a list reads alike twice)
    replayed = loader if isinstance(loader, (list, tuple, Tensor)) or not isinstance(loader, Iterable) else (
        _Replayed(loader))  # fmt: skip
    with warnings.catch_warnings():  # the verdict below reports the certificate
        warnings.simplefilter("ignore", UncertifiedWarning)
        full, half = (rank_layers(model, replayed, **rank_options, tolerance=tolerance,
                                  settings=replace(settings, n_steps=n, max_images=images, until_stable=None))
                      for n in steps)  # fmt: skip
    top, top_half = full.top_k(k, budget), half.top_k(k, budget)
    ratio = (steps[0] / steps[1]) ** _ORDER.get(settings.rule, 2)
    certificate = full.certificate(tolerance)
    check = StepCheck(settings.n_steps, settings.rule, full.images, top, top_half,
                      len(set(top) & set(top_half)) / len(top), _error(full, half, ratio - 1),
                      certificate.worst_error, certificate.worst_gap, tolerance)  # fmt: skip
    if warn and not check.enough:
        advice = remedy(settings.rule, ramp=bool(getattr(settings.integration_path(), "ramp", False)))
        warnings.warn(f"{check.summary()}; {advice}, or start the path where no normalisation layer is singular "
                      "(macattr.baselines)", UserWarning, stacklevel=2)  # fmt: skip
    return check


class _Replayed:
    """A loader read once: the first pass takes batches from it and keeps them; a later pass gives the kept
    batches again, then takes more from the same reading of the loader."""

    def __init__(self, loader: Iterable[Any]) -> None:
        self.kept: List[Any] = []
        self.source = iter(loader)
        self.dataset = getattr(loader, "dataset", None)  # a DataLoader's: the progress bar's total

    def __iter__(self) -> Iterator[Any]:
        yield from list(self.kept)
        for batch in self.source:
            self.kept.append(batch)
            yield batch


def _error(full: LayerScores, half: LayerScores, shrink: float) -> float:
    """The largest Richardson estimate of a score's relative error at the finer grid: the difference divided by
    ``shrink`` = (N / M)^p − 1."""
    scale = max(abs(v) for v in full.values()) or 1.0
    return max(abs(full[n] - half[n]) / shrink / max(abs(full[n]), 1e-12 * scale) for n in full)


__all__ = ["StepCheck", "check_steps"]
