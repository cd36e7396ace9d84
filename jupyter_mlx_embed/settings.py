"""User-facing settings as one traitlets ``Configurable`` (the edge; engine code never sees it).

The traits are generated from the settings declared in :mod:`.config`, so each setting is
written once. The same keys work in ``jupyter_server_config.py``
(``c.MLXEmbed.default_model = ...``), ``ipython_config.py``, ``%config MLXEmbed.x = ...`` and
on the command line (``--MLXEmbed.token_budget=4096``). A trait left unset falls back to its
``JUPYTER_MLX_EMBED_*`` environment variable, then to the default. A value is checked when it
is set, against the same bounds and choices the declaration gives (``%config
MLXEmbed.queue_size = 0`` is refused at once, naming the setting and its minimum, and the old
value stays).
"""

from __future__ import annotations

import ast
import dataclasses
from typing import TYPE_CHECKING, Any

from traitlets import Bool, Enum, Float, Int, List, TraitError, TraitType, Unicode, validate
from traitlets.config import Configurable

from .config import SETTINGS_CLASSES, EngineConfig, ServingConfig
from .envvars import setting_variable

_TRAIT_TYPES: dict[str, type[TraitType[Any, Any]]] = {
    "bool": Bool,
    "int": Int,
    "float": Float,
    "str": Unicode,
    "str | None": Unicode,
}


class _Folders(List):
    """A list of folder paths. A class the command line names before it is known (an
    extension's, in ``jupyter lab``) gets each flag's text as one item: a ``["a", "b"]``
    literal there is read as the list it spells, as it is for a known class."""

    def from_string(self, s: str) -> Any:
        if s.lstrip().startswith("["):
            try:
                value = ast.literal_eval(s)
            except (ValueError, SyntaxError):
                pass
            else:
                if isinstance(value, list):
                    return value  # its items are checked when it is set
        return super().from_string(s)


def _trait(f: dataclasses.Field[Any]) -> TraitType[Any, Any]:
    """The trait of one setting: unset (``None``) unless configured."""
    default = "unset" if f.default is None else repr(f.default)
    help = f"{f.metadata['help']} Default {default}; env {setting_variable(f.name)}."
    if f.name == "model_roots":
        trait: TraitType[Any, Any] = _Folders(Unicode(), help=help)
    elif f.metadata["choices"] is not None:
        trait = Enum(list(f.metadata["choices"]), None, allow_none=True, help=help)
    else:
        trait = _TRAIT_TYPES[str(f.type)](None, allow_none=True, help=help)
    return trait.tag(config=True)


#: The settings class that declares each setting.
_DECLARED_IN = {f.name: cls for cls in SETTINGS_CLASSES for f in dataclasses.fields(cls)}


def _check(self: Configurable, proposal: Any) -> Any:
    """Refuse a value the declaration does not allow (traitlets keeps the old one): the
    settings class itself checks it, so bounds and choices are stated once, in config.py."""
    name, value = proposal["trait"].name, proposal["value"]
    if value is not None:
        try:
            _DECLARED_IN[name](**{name: value})
        except ValueError as exc:
            raise TraitError(f"{type(self).__name__}.{exc}") from None
    return value


class _MLXEmbedBase(Configurable):
    """Turns the configured traits into the frozen settings the engine and servers use."""

    def _values(self, cls: type[Any]) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(cls)}
        if "model_roots" in values:
            values["model_roots"] = tuple(values["model_roots"]) or None  # empty: not set
        return values

    def engine_config(self) -> EngineConfig:
        """The worker's settings: traits set here, else the environment, else defaults."""
        return EngineConfig.from_env(**self._values(EngineConfig))

    def serving_config(self) -> ServingConfig:
        """The front ends' settings: traits set here, else the environment, else defaults."""
        return ServingConfig.from_env(**self._values(ServingConfig))


if TYPE_CHECKING:

    class MLXEmbed(_MLXEmbedBase):
        """Settings of the embedding worker, its HTTP endpoint and the magics."""

else:  # one trait per declared setting, built when the class is created
    MLXEmbed = type(_MLXEmbedBase)(
        "MLXEmbed",
        (_MLXEmbedBase,),
        {
            "__doc__": "Settings of the embedding worker, its HTTP endpoint and the magics.",
            "__module__": __name__,
            **{f.name: _trait(f) for cls in SETTINGS_CLASSES for f in dataclasses.fields(cls)},
            "_check": validate(*_DECLARED_IN)(_check),
        },
    )
