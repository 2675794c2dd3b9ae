"""macattr: rank the layers of a PyTorch network by Mask Attribute Conductance (MAC).

import macattr
from macattr import LayerMAC, targets

attr = LayerMAC(targets.gradient_magnitude(model), model.body[3]).attribute(x)
names = macattr.select_top_k(model, loader, k=0.1)        # the layers RAM fine-tunes
trainable = macattr.freeze_except(model, names)
"""

from macattr import targets
from macattr.attribution import LayerMAC, LayerPathConductance, LayerPathInternalInfluence
from macattr.finetune import TrainableLayers, freeze_except
from macattr.layers import candidate_layers
from macattr.paths import LinearPath, MaskAttributionPath
from macattr.plots import plot_comparison, plot_layer_importance
from macattr.ranking import ScoreSum, rank_layers, select_top_k
from macattr.scores import LayerScores

__version__ = "0.1.0"

__all__ = [
    "LayerMAC",
    "LayerPathConductance",
    "LayerPathInternalInfluence",
    "LayerScores",
    "LinearPath",
    "MaskAttributionPath",
    "ScoreSum",
    "TrainableLayers",
    "candidate_layers",
    "freeze_except",
    "plot_comparison",
    "plot_layer_importance",
    "rank_layers",
    "select_top_k",
    "targets",
]
