"""Model names resolve to validated folders; configuration comes from the environment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jupyter_mlx_embed import EngineConfig, ModelLoadError, ModelNotFoundError, ModelTypeError
from jupyter_mlx_embed.modelspec import read_model_spec
from jupyter_mlx_embed.registry import (
    BUNDLED_NAME,
    ModelRegistry,
    bundled_model_path,
    is_valid_model_name,
    verify_bundled_model,
)


@pytest.fixture
def hf_cache(tmp_path: Path, model_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding ``acme/tiny-embedder`` (a copy of a tiny model)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-embedder"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model_root / "tiny-xlmr-mean", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_bundled_default_and_its_aliases() -> None:
    registry = ModelRegistry(EngineConfig())
    spec = registry.resolve(None)
    assert spec.name == BUNDLED_NAME and spec.source == "bundled"
    assert registry.resolve("sentence-transformers/all-MiniLM-L6-v2").path == spec.path
    assert (spec.pooling, spec.max_seq_length, spec.dimension) == ("mean", 256, 384)


def test_bundled_weights_are_verified(tmp_path: Path) -> None:
    verify_bundled_model(bundled_model_path())
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(ModelLoadError, match="corrupt"):
        verify_bundled_model(tmp_path)


def test_a_kept_check_is_reused_only_for_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyter_mlx_embed import registry

    model = tmp_path / "model"
    shutil.copytree(bundled_model_path(), model)
    kept = tmp_path / "kept"
    kept.mkdir()
    verify_bundled_model(model, keep_in=kept)  # read once, remembered

    def unread(path: Path) -> str:
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(registry, "sha256_file", unread)
    verify_bundled_model(model, keep_in=kept)
    monkeypatch.undo()
    weights = model / "model.safetensors"
    with weights.open("r+b") as f:  # the same size, another byte: the file changed
        f.seek(1000)
        f.write(bytes([f.read(1)[0] ^ 1]))
    with pytest.raises(ModelLoadError, match="corrupt"):
        verify_bundled_model(model, keep_in=kept)


def test_model_root_folders(model_root: Path, tmp_path: Path) -> None:
    nested = tmp_path / "org" / "nested-model"
    shutil.copytree(model_root / "tiny-bert-cls", nested)
    registry = ModelRegistry(EngineConfig(model_roots=(model_root, tmp_path)))
    assert registry.resolve("tiny-bert-cls").path == (model_root / "tiny-bert-cls").resolve()
    assert registry.resolve("org/nested-model").source == "root"


def test_a_root_that_is_not_a_folder_is_named_in_the_log_and_hinted_at(
    model_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    typo = tmp_path / "modles"
    registry = ModelRegistry(EngineConfig(model_roots=(typo, model_root)))
    assert f"model root {typo} is not a folder" in caplog.text
    assert registry.resolve("tiny-bert-cls").source == "root"  # the other root still serves
    with pytest.raises(ModelNotFoundError, match="a configured model root is not a folder"):
        registry.resolve("my-model")
    caplog.clear()
    with pytest.raises(ModelNotFoundError) as info:
        ModelRegistry(EngineConfig(model_roots=(model_root,))).resolve("my-model")
    assert "model root" not in str(info.value) and caplog.text == ""


def test_symlink_escaping_a_root_is_not_followed(tmp_path: Path, model_root: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(model_root / "tiny-bert-cls")
    with pytest.raises(ModelNotFoundError):
        ModelRegistry(EngineConfig(model_roots=(root,))).resolve("escape")


def test_hugging_face_cache_repo(hf_cache: Path) -> None:
    spec = ModelRegistry(EngineConfig()).resolve("acme/tiny-embedder")
    assert spec.source == "hf-cache" and spec.model_type == "xlm_roberta"


def test_missing_repo_mentions_disabled_downloads(hf_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="downloads from the hub are disabled"):
        ModelRegistry(EngineConfig()).resolve("acme/not-cached")


def test_list_models_covers_every_source(hf_cache: Path, model_root: Path) -> None:
    entries = ModelRegistry(EngineConfig(model_roots=(model_root,))).list_models()
    sources = {e.name: e.source for e in entries}
    assert sources[BUNDLED_NAME] == "bundled"
    assert sources["tiny-qwen3-last"] == "root"
    assert sources["acme/tiny-embedder"] == "hf-cache"


@pytest.mark.parametrize("name", ["bert", "org/model-v1.5", "BAAI/bge-small-en_v1.5"])
def test_valid_names(name: str) -> None:
    assert is_valid_model_name(name)


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b/c", "/abs", "a/..", ".hidden", "a b"])
def test_invalid_names(name: str) -> None:
    assert not is_valid_model_name(name)


def _copy_model(model_root: Path, tmp_path: Path, name: str = "tiny-bert-cls") -> Path:
    return Path(shutil.copytree(model_root / name, tmp_path / "m"))


def test_pooling_defaults_without_sentence_transformers_config(
    model_root: Path, tmp_path: Path
) -> None:
    folder = _copy_model(model_root, tmp_path, "tiny-qwen3-last")
    (folder / "modules.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen3Model"]}))
    assert read_model_spec(folder, name="m", source="root").pooling == "lasttoken"


def test_several_pooling_modes_are_unsupported(model_root: Path, tmp_path: Path) -> None:
    folder = _copy_model(model_root, tmp_path)
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True})
    )
    with pytest.raises(ModelTypeError, match="exactly one"):
        read_model_spec(folder, name="m", source="root")


def test_dense_module_after_normalize_is_refused(model_root: Path, tmp_path: Path) -> None:
    folder = _copy_model(model_root, tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append(
        {"idx": 3, "name": "3", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelTypeError, match="Dense"):
        read_model_spec(folder, name="m", source="root")


def test_max_length_falls_back_to_tokenizer_then_positions(
    model_root: Path, tmp_path: Path
) -> None:
    folder = _copy_model(model_root, tmp_path)
    (folder / "sentence_bert_config.json").unlink()
    assert read_model_spec(folder, name="m", source="root").max_seq_length == 64
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 40}))
    assert read_model_spec(folder, name="m", source="root").max_seq_length == 40
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1e30}))
    assert read_model_spec(folder, name="m", source="root").max_seq_length == 64


def test_config_from_environment() -> None:
    config = EngineConfig.from_env(
        {
            "JUPYTER_MLX_EMBED_TOKEN_BUDGET": "4096",
            "JUPYTER_MLX_EMBED_ALLOW_DOWNLOAD": "yes",
            "JUPYTER_MLX_EMBED_MODEL_ROOTS": "/a:/b",
            "JUPYTER_MLX_EMBED_BATCH_WINDOW_MS": "0.5",
        },
        default_model="x",
    )
    assert config.token_budget == 4096 and config.allow_download is True
    assert config.model_roots == (Path("/a"), Path("/b"))
    assert config.batch_window_ms == 0.5 and config.default_model == "x"


@pytest.mark.parametrize(
    ("var", "value"),
    [("TOKEN_BUDGET", "lots"), ("TRUNCATE", "maybe"), ("QUEUE_SIZE", "0")],
)
def test_bad_environment_values_are_clear(var: str, value: str) -> None:
    with pytest.raises(ValueError, match=var.lower() if value == "0" else var):
        EngineConfig.from_env({f"JUPYTER_MLX_EMBED_{var}": value})


def test_listing_shows_only_names_a_request_can_use(model_root: Path, tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    shutil.copytree(model_root / "tiny-bert-cls", root / "good")  # has 1_Pooling/config.json
    (root / "1_Pooling").mkdir()  # a pooling folder directly in the root is not a model
    shutil.copytree(model_root / "tiny-bert-cls", outside / "secret")
    (root / "escape").symlink_to(outside / "secret")
    (root / "org").mkdir()
    shutil.copytree(model_root / "tiny-xlmr-mean", root / "org" / "nested")
    registry = ModelRegistry(EngineConfig(model_roots=(root,)))
    listed = [e.name for e in registry.list_models() if e.source == "root"]
    assert listed == ["good", "org/nested"]
    for name in listed:
        registry.resolve(name)  # everything listed is accepted


def test_a_fifo_instead_of_weights_is_refused_not_read(model_root: Path, tmp_path: Path) -> None:
    import os

    folder = shutil.copytree(model_root / "tiny-bert-cls", tmp_path / "fifo-weights")
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    registry = ModelRegistry(EngineConfig(model_roots=(tmp_path,)))
    with pytest.raises(ModelLoadError, match=r"model\.safetensors is not a regular file"):
        registry.resolve("fifo-weights")


def test_error_bodies_leave_server_paths_out(model_root: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(model_root / "tiny-bert-cls", tmp_path / "no-weights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as info:
        ModelRegistry(EngineConfig(model_roots=(tmp_path,))).resolve("no-weights")
    assert str(tmp_path) in info.value.message  # the local caller sees where
    assert str(tmp_path) not in json.dumps(info.value.to_dict())  # clients do not
