"""What a request asks for besides its inputs: one frozen, checked object (pure: no MLX).

Every front end (HTTP routes, the Python API and magics, the explorer, batch jobs) builds one
:class:`EmbedOptions` and passes it down to :meth:`~jupyter_mlx_embed.worker.Worker.submit`;
building it is where the options are checked. A new option is a field here, its check in
``__post_init__``, and its one use in the worker; the HTTP client sends every field by name
(:meth:`EmbedOptions.wire`), as the OpenAI request body names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequestError, elide
from .validation import check_dimensions, check_prompt


@dataclass(frozen=True)
class EmbedOptions:
    """Options of one embedding request.

    Args:
        model: Model name; the configured default when ``None``.
        dimensions: Keep the first ``dimensions`` values and renormalise.
        prompt_name: One of the model's prompts (``config_sentence_transformers.json``),
            put before every text; by default its ``default_prompt_name``, if any.
        prompt: A prompt text of the caller's own, instead of a named one.
        truncate: Truncate over-long inputs instead of failing; ``None``: the worker's
            setting.

    Raises:
        InvalidRequestError: A value of the wrong type or out of range (naming the field).
    """

    model: str | None = None
    dimensions: int | None = None
    prompt_name: str | None = None
    prompt: str | None = None
    truncate: bool | None = None

    def __post_init__(self) -> None:
        if self.model is not None and not isinstance(self.model, str):
            raise InvalidRequestError(
                f"model must be a string, got {elide(self.model)}", param="model"
            )
        check_dimensions(self.dimensions)
        check_prompt(self.prompt_name, self.prompt)
        if self.truncate is not None and not isinstance(self.truncate, bool):
            raise InvalidRequestError(
                f"truncate must be true or false, got {elide(self.truncate)}", param="truncate"
            )

    def wire(self) -> dict[str, Any]:
        """The fields that are set, by their request-body names."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }
