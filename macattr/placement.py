"""Where a model's weights are: sharded across processes, offloaded by accelerate's hooks, or in place.

- **Sharded** (FSDP2's ``fully_shard``): parameters are DTensors, each process holding a shard; every forward
  and backward pass gathers them, so every process of the mesh must run the same passes.
- **Offloaded** (accelerate's ``dispatch_model`` / transformers' ``device_map`` with ``"disk"`` or CPU offload):
  the parameter sits on the ``meta`` device without values, and the module's hook (``_hf_hook``) loads it from its
  ``weights_map`` onto the execution device for each forward pass.
- **Dispatched** across devices (``device_map`` over several GPUs): each module's hook moves its inputs to its
  own device; the model's input goes where its first layer is.

[`weight_values`][macattr.placement.weight_values] gives every parameter and buffer with its values wherever
they are held (offloaded ones read from their hook), for digests and for methods that read weights;
[`input_device`][macattr.placement.input_device] the device a model's inputs go to.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` holds sharded parameters (DTensors, as FSDP2's ``fully_shard`` leaves them).

    Examples:
        >>> is_sharded(nn.Linear(2, 2))
        False
    """
    return any(is_dtensor(p) for p in model.parameters())


def is_dtensor(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a DTensor (one shard of it in this process)."""
    return callable(getattr(tensor, "to_local", None)) and hasattr(tensor, "placements")


def offloaded_value(module: nn.Module, name: str, tensor: Tensor) -> Optional[Tensor]:
    """The values of ``module``'s own tensor ``name`` that accelerate's hook holds for it, when the tensor itself
    is on the meta device; ``None`` otherwise.

    Examples:
        >>> layer = nn.Linear(2, 2)
        >>> offloaded_value(layer, "weight", layer.weight) is None  # in place
        True
    """
    if not tensor.is_meta:
        return None
    weights = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights is None:
        return None
    try:
        return weights[name]
    except KeyError:
        return None


def weight_values(model: nn.Module) -> Iterator[Tuple[str, Tensor]]:
    """Every parameter and buffer of ``model`` by its full name, with values: offloaded ones (meta tensors whose
    module's accelerate hook holds their values) read from the hook. A meta tensor that nothing holds values for
    is given as it is.

    Examples:
        >>> [name for name, _ in weight_values(nn.BatchNorm1d(2))]
        ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']
    """
    for prefix, module in model.named_modules():
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in own:
            loaded = offloaded_value(module, name, tensor)
            yield (f"{prefix}.{name}" if prefix else name), (tensor if loaded is None else loaded)


def offloaded_values(model: nn.Module) -> Dict[int, Tensor]:
    """For every offloaded parameter or buffer of ``model``: ``id`` of the meta tensor → its values."""
    held = {}
    for module in model.modules():
        for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
            loaded = offloaded_value(module, name, tensor)
            if loaded is not None:
                held[id(tensor)] = loaded
    return held


def offloaded(model: nn.Module) -> List[str]:
    """The names of the parameters that accelerate's hooks load for each forward pass (held on the meta device).

    Examples:
        >>> offloaded(nn.Linear(2, 2))
        []
    """
    return [f"{prefix}.{name}" if prefix else name for prefix, module in model.named_modules()
            for name, tensor in module.named_parameters(recurse=False)
            if offloaded_value(module, name, tensor) is not None]  # fmt: skip


def input_device(model: nn.Module) -> torch.device:
    """The device a model's input goes to: that of its first module (in registration order) with a tensor in
    place, or, for an offloaded one, its hook's execution device; CPU for a model without weights.

    Examples:
        >>> input_device(nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
        device(type='cpu')
    """
    for module in model.modules():
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            if not tensor.is_meta:
                return tensor.device
            device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
            if device is not None:
                return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    return torch.device("cpu")


__all__ = [
    "input_device",
    "is_dtensor",
    "is_sharded",
    "offloaded",
    "offloaded_value",
    "offloaded_values",
    "weight_values",
]
