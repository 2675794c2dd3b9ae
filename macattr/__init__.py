"""macattr: rank the layers of a PyTorch network by Mask Attribute Conductance (MAC).

from macattr import LayerMAC
import macattr.targets as targets
attr = LayerMAC(targets.gradient_magnitude(model), model.body[3]).attribute(x)
"""

from macattr import targets
from macattr.attribution import LayerMAC, LayerPathConductance, LayerPathInternalInfluence
from macattr.paths import LinearPath, MaskAttributionPath

__version__ = "0.1.0"

__all__ = [
    "LayerMAC",
    "LayerPathConductance",
    "LayerPathInternalInfluence",
    "LinearPath",
    "MaskAttributionPath",
    "targets",
]
