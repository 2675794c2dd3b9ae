"""Keyword arguments of the model's forward call besides its input, constant or taken from each batch: a
diffusion UNet's ``timestep``, a padded text batch's ``attention_mask``.

A tensor whose first dimension is the batch's size is per sample: it follows the analysed samples of its batch
and is repeated for every grid point a pass stacks (step-major, as the path's points are); anything else is
passed as it is to every call.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from macattr.records import callable_identity, json_value

ForwardKwargs = Union[None, Mapping[str, Any], Callable[[Any], Mapping[str, Any]]]


class BatchKeywords:
    """The keyword arguments of ``forward_kwargs`` (a mapping, or a function of the loader's batch returning
    one), set batch by batch and added to every call of the model through
    [`wrap()`][macattr.ranking.keywords.BatchKeywords.wrap].

    Examples:
        >>> keywords = BatchKeywords(lambda batch: {"scale": batch["scale"]})
        >>> keywords.use({"scale": torch.tensor([1.0, 2.0, 3.0])}, rows=[0, 2], size=3, device=torch.device("cpu"))
        >>> call = keywords.wrap(lambda x, scale: x * scale[:, None])
        >>> call(torch.ones(4, 1)).flatten().tolist()  # two samples at two grid points, step-major
        [1.0, 3.0, 1.0, 3.0]
    """

    def __init__(self, forward_kwargs: ForwardKwargs) -> None:
        if forward_kwargs is not None and not isinstance(forward_kwargs, Mapping) and not callable(forward_kwargs):
            raise TypeError(f"forward_kwargs must be a dict of keyword arguments, a function of the loader's batch "
                            f"returning one, or None; got {type(forward_kwargs).__name__}")  # fmt: skip
        self.spec = forward_kwargs
        self.current: Dict[str, Any] = {}
        self.samples = 0

    @property
    def given(self) -> bool:
        return self.spec is not None

    def of(self, batch: Any) -> Dict[str, Any]:
        """The keyword arguments for the loader's ``batch``, checked."""
        if self.spec is None:
            return {}
        values = self.spec(batch) if callable(self.spec) else self.spec
        if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
            raise TypeError(f"forward_kwargs must give a dict of keyword arguments (names → values), got "
                            f"{type(values).__name__}")  # fmt: skip
        return dict(values)

    def use(self, batch: Any, rows: List[int], size: int, device: torch.device) -> None:
        """Set the arguments of the next calls: those of ``batch`` (``size`` samples), the per-sample tensors cut
        to its analysed ``rows``, on ``device``."""
        chosen = torch.as_tensor(rows, dtype=torch.long)

        def cut(value: Any) -> Any:
            if not isinstance(value, Tensor):
                return value
            value = value.to(device)
            return value[chosen.to(device)] if value.dim() and value.shape[0] == size else value

        self.current = {name: cut(value) for name, value in self.of(batch).items()}
        self.samples = len(rows)

    def wrap(self, model: Callable[..., Any]) -> nn.Module:
        """``model`` called with the current arguments too, each per-sample tensor repeated to the rows of the
        call's input (the first tensor argument); a module holding ``model``, so that its layers stay inside."""
        return _WithKeywords(model, self)

    def identity(self) -> Optional[Any]:
        """What a checkpoint records of ``forward_kwargs``: a function's identity, or the mapping as JSON."""
        if self.spec is None:
            return None
        return callable_identity(self.spec) if callable(self.spec) else json_value(dict(self.spec))


class _WithKeywords(nn.Module):
    """``model`` with the keyword arguments ``keywords`` holds now (see ``BatchKeywords.wrap``)."""

    def __init__(self, model: Callable[..., Any], keywords: BatchKeywords) -> None:
        super().__init__()
        self.model, self.keywords = model, keywords

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        samples = self.keywords.samples
        rows = first.shape[0] if first is not None and first.dim() else samples
        repeats = rows // samples if samples and rows % samples == 0 else 1
        extra = {name: _repeated(value, samples, repeats) for name, value in self.keywords.current.items()}
        return self.model(*args, **kwargs, **extra)


def _repeated(value: Any, samples: int, repeats: int) -> Any:
    if isinstance(value, Tensor) and value.dim() and value.shape[0] == samples and repeats > 1:
        return torch.cat([value] * repeats)
    return value


__all__ = ["BatchKeywords", "ForwardKwargs"]
