"""Settings are declared once (config.py); traits, env vars, CLI flags and the README follow."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config

from jupyter_mlx_embed import api
from jupyter_mlx_embed.cli import build_parser
from jupyter_mlx_embed.config import SETTINGS_CLASSES, EngineConfig, ServingConfig
from jupyter_mlx_embed.settings import MLXEmbed

FIELDS = [f for cls in SETTINGS_CLASSES for f in dataclasses.fields(cls)]
README = (Path(__file__).parent.parent / "README.md").read_text()


def _shown(default: object) -> str:
    if default is None:
        return "(unset)"
    if default == ():
        return "(none)"
    return f"`{str(default).lower() if isinstance(default, bool) else default}`"


def test_every_setting_is_a_trait_with_its_help() -> None:
    traits = MLXEmbed.class_traits(config=True)
    assert set(traits) == {f.name for f in FIELDS}
    for f in FIELDS:
        assert f.metadata["help"] in traits[f.name].help
        assert f"JUPYTER_MLX_EMBED_{f.name.upper()}" in traits[f.name].help


def test_readme_table_matches_the_declarations() -> None:
    rows = [f"| `{f.name}` | {_shown(f.default)} | {f.metadata['help']} |" for f in FIELDS]
    assert [row for row in rows if row not in README.splitlines()] == []


def test_traits_then_environment_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_MLX_EMBED_CHUNK_SIZE", "17")
    monkeypatch.setenv("JUPYTER_MLX_EMBED_TOKEN_BUDGET", "1000")
    config = Config()
    config.MLXEmbed.token_budget = 2048
    config.MLXEmbed.model_roots = ["/models"]
    settings = MLXEmbed(config=config)
    engine, serving = settings.engine_config(), settings.serving_config()
    assert engine.token_budget == 2048 and engine.model_roots == (Path("/models"),)
    assert serving.chunk_size == 17 and serving.request_timeout == 600.0
    assert engine.max_batch_size == EngineConfig.max_batch_size


@pytest.mark.parametrize(
    "flags",
    [
        ['--MLXEmbed.model_roots=["/m/a", "/m/b"]'],  # the list literal, as for known classes
        ["--MLXEmbed.model_roots=/m/a", "--MLXEmbed.model_roots=/m/b"],  # a flag per item
    ],
)
def test_model_roots_from_the_command_line_of_a_server_that_loads_us_later(
    flags: list[str],
) -> None:
    from traitlets.config import Application

    app = Application()  # knows no MLXEmbed when it parses: as jupyter lab with extensions
    app.parse_command_line(flags)
    assert MLXEmbed(config=app.config).engine_config().model_roots == (
        Path("/m/a"),
        Path("/m/b"),
    )


@pytest.mark.parametrize(
    ("cls", "changes", "message"),
    [
        (ServingConfig, {"transport": "carrier-pigeon"}, "transport must be one of"),
        (ServingConfig, {"chunk_size": 0}, "chunk_size must be >= 1"),
        (EngineConfig, {"cpu_streams": 0}, "cpu_streams must be >= 1"),
    ],
)
def test_invalid_values_are_refused(cls: type, changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**changes)


BOUNDED = [f for f in FIELDS if f.metadata["minimum"] is not None]


@pytest.mark.parametrize("field", BOUNDED, ids=[f.name for f in BOUNDED])
def test_a_trait_below_its_declared_minimum_is_refused_when_set(field) -> None:
    settings = MLXEmbed()
    minimum = field.metadata["minimum"]
    setattr(settings, field.name, minimum)  # the minimum itself is allowed
    below = minimum - 1 if field.type == "int" else minimum / 2 if minimum else -0.5
    message = f"MLXEmbed.{field.name} must be >= {minimum}, got {below!r}"
    with pytest.raises(TraitError, match=f"^{re.escape(message)}$"):
        setattr(settings, field.name, below)
    assert getattr(settings, field.name) == minimum


def test_invalid_configuration_is_refused_when_loaded() -> None:
    config = Config()
    config.MLXEmbed.queue_size = 0
    with pytest.raises(TraitError, match="queue_size must be >= 1, got 0"):
        MLXEmbed(config=config)
    with pytest.raises(TraitError, match="expected any of"):
        MLXEmbed().transport = "carrier-pigeon"


def test_serve_has_a_flag_per_server_setting() -> None:
    flags = "--token-budget 1024 --no-truncate --model m --preload --model-root /a"
    flags += " --model-root /b --max-body-bytes 99"
    args = build_parser().parse_args(["serve", *flags.split()])
    assert (args.token_budget, args.truncate, args.default_model) == (1024, False, "m")
    assert args.model_roots == [Path("/a"), Path("/b")] and args.preload is True
    assert args.max_body_bytes == 99
    assert not hasattr(args, "transport"), "kernel-only settings are no server flags"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--token-budget", "lots"])


def test_request_timeout_reaches_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_MLX_EMBED_TRANSPORT", "local")
    previous = api.serving_config()
    try:
        api.set_serving_config(ServingConfig(transport="local", request_timeout=12.5))
        assert api.get_transport().timeout == 12.5
        api.set_serving_config(ServingConfig(transport="local", request_timeout=3.0))
        assert api.get_transport().timeout == 3.0
    finally:
        api.set_serving_config(previous)
