"""sentence-transformers' ``Dense`` modules on the pooled vector (engine layer).

``Dense`` computes ``activation(linear(x))`` (plus ``x``, or ``residual(x)`` between different
sizes, with ``use_residual``); EmbeddingGemma's ``2_Dense`` and ``3_Dense`` map 768 values to
3072 and back, without bias or activation (``Identity``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn

from ...errors import ModelLoadError
from ...modelspec import DenseModule

#: The activations ``modelspec.DENSE_ACTIVATIONS`` names, as torch computes them.
ACTIVATIONS: dict[str, Callable[[mx.array], mx.array]] = {
    "identity": lambda x: x,
    "tanh": mx.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,  # torch.nn.GELU's default: the exact erf form
    "sigmoid": mx.sigmoid,
    "silu": nn.silu,
}


class Dense(nn.Module):
    """One ``Dense`` module, its tensors named as in its ``model.safetensors``."""

    def __init__(self, spec: DenseModule) -> None:
        super().__init__()
        self.linear = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        if spec.residual and spec.in_features != spec.out_features:
            self.residual = nn.Linear(spec.in_features, spec.out_features, bias=False)
        self._activation = spec.activation
        self._add_input = spec.residual

    def __call__(self, x: mx.array) -> mx.array:
        out = ACTIVATIONS[self._activation](self.linear(x))
        if not self._add_input:
            return out
        return out + (self.residual(x) if "residual" in self else x)


class DenseStack(nn.Module):
    """The Dense modules of a model, applied in order."""

    def __init__(self, specs: Sequence[DenseModule]) -> None:
        super().__init__()
        self.layers = [Dense(spec) for spec in specs]

    def __call__(self, pooled: mx.array) -> mx.array:
        for module in self.layers:
            pooled = module(pooled)
        return pooled


def load_dense(specs: Sequence[DenseModule], name: str) -> DenseStack:
    """Build the Dense modules and load each one's ``model.safetensors``.

    Raises:
        ModelLoadError: A weights file is missing or unreadable, or its tensors do not match
            the module's config (names or shapes).
    """
    stack = DenseStack(specs)
    for spec, module in zip(specs, stack.layers, strict=True):
        file = spec.path / "model.safetensors"
        try:
            weights = mx.load(str(file))
            assert isinstance(weights, dict)  # a .safetensors file loads as a dict
            module.load_weights(list(weights.items()), strict=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"Model '{name}': the Dense module '{spec.path.name}' cannot be loaded from "
                f"{file}: {exc}"
            ) from exc
    return stack
