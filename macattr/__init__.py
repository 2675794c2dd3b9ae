"""macattr: rank the layers of a PyTorch network by Mask Attribute Conductance (MAC).

    import macattr
    from macattr import LayerMAC, targets

    attr = LayerMAC(targets.gradient_magnitude(model), model.body[3]).attribute(x, seed=0)
    names = macattr.select_top_k(model, loader, k=0.1)        # the layers RAM fine-tunes
    trainable = macattr.freeze_except(model, names)

The public names load on first use, so ``import macattr`` imports neither
Captum nor matplotlib nor scipy, and never touches the matplotlib backend.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, List

__version__ = "0.4.0"

_WHERE = {
    "LayerMAC": "macattr.attribution",
    "LayerPathConductance": "macattr.attribution",
    "LayerPathInternalInfluence": "macattr.attribution",
    "BlurPath": "macattr.paths",
    "IntegrationPath": "macattr.paths",
    "LinearPath": "macattr.paths",
    "MaskAttributionPath": "macattr.paths",
    "LayerScores": "macattr.scores",
    "resolve_k": "macattr.scores",
    "ScoreSum": "macattr.accumulators",
    "RankSettings": "macattr.ranking",
    "rank_layers": "macattr.ranking",
    "select_top_k": "macattr.ranking",
    "UntilStable": "macattr.ranking",
    "UncertifiedError": "macattr.ranking",
    "UncertifiedWarning": "macattr.ranking",
    "check_steps": "macattr.ranking.step_check",
    "candidate_layers": "macattr.layers",
    "execution_order": "macattr.layers",
    "TrainableLayers": "macattr.finetune",
    "freeze_except": "macattr.finetune",
    "plot_comparison": "macattr.plots",
    "plot_layer_importance": "macattr.plots",
}
_SUBMODULES = ("targets", "paths", "restoration")

__all__ = [
    "BlurPath",
    "IntegrationPath",
    "LayerMAC",
    "LayerPathConductance",
    "LayerPathInternalInfluence",
    "LayerScores",
    "LinearPath",
    "MaskAttributionPath",
    "RankSettings",
    "ScoreSum",
    "TrainableLayers",
    "UncertifiedError",
    "UncertifiedWarning",
    "UntilStable",
    "candidate_layers",
    "check_steps",
    "execution_order",
    "freeze_except",
    "paths",
    "plot_comparison",
    "plot_layer_importance",
    "rank_layers",
    "resolve_k",
    "restoration",
    "select_top_k",
    "targets",
]

if TYPE_CHECKING:
    from macattr import paths, restoration, targets
    from macattr.accumulators import ScoreSum
    from macattr.attribution import LayerMAC, LayerPathConductance, LayerPathInternalInfluence
    from macattr.finetune import TrainableLayers, freeze_except
    from macattr.layers import candidate_layers, execution_order
    from macattr.paths import BlurPath, IntegrationPath, LinearPath, MaskAttributionPath
    from macattr.plots import plot_comparison, plot_layer_importance
    from macattr.ranking import (
        RankSettings,
        UncertifiedError,
        UncertifiedWarning,
        UntilStable,
        rank_layers,
        select_top_k,
    )
    from macattr.ranking.step_check import check_steps
    from macattr.scores import LayerScores, resolve_k


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(import_module(_WHERE[name]), name)
    elif name in _SUBMODULES:
        value = import_module(f"macattr.{name}")
    else:
        raise AttributeError(f"module 'macattr' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted([*globals(), *__all__])
