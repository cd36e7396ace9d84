"""Hatchling build hook: a wheel built on Linux x86-64 carries the native CPU kernels prebuilt.

The kernels (``jupyter_mlx_embed/engine/csrc/``) are compiled by the engine's own build
(:func:`jupyter_mlx_embed.engine.native.build_prebuilt`) with the build environment's mlx,
nanobind, CMake and C++ compiler, into the wheel's ``jupyter_mlx_embed/engine/prebuilt/``
together with the key the engine checks before using them; the wheel is then tagged for this
Python and platform. Where that cannot be done (another platform, a tool missing, a failed
step) the hook says why and the wheel stays pure Python: the kernels are then built on first
use, as from a checkout. Editable installs and sdists are left alone.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: Where the wheel carries the prebuilt module (``native.PREBUILT`` beside ``native.py``).
PREBUILT_IN_WHEEL = "jupyter_mlx_embed/engine/prebuilt"

# The private name the checkout's package is loaded under for the build (see _load_native).
_ALIAS = "_jme_wheel_build"


def _load_native(package: Path) -> types.ModuleType:
    """``engine/native.py`` of the checkout, imported under a private package name.

    Its relative imports (``._build``, ``..config``, ``..envvars``, ``..fileio``: standard
    library only) then resolve in the checkout, while the package's ``__init__`` (which needs
    the runtime dependencies) and any installed copy of the package stay out of it.
    """
    for name, folder in ((_ALIAS, package), (f"{_ALIAS}.engine", package / "engine")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(folder)]
        sys.modules[name] = stub
    return importlib.import_module(f"{_ALIAS}.engine.native")


def _unload_native() -> None:
    for name in [name for name in sys.modules if name.partition(".")[0] == _ALIAS]:
        del sys.modules[name]


class NativeKernelsBuildHook(BuildHookInterface):
    """Compile the native kernels into a standard wheel (Linux x86-64), never failing it."""

    _scratch: str | None = None

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Build the kernels into a scratch folder and add them to the wheel as
        ``jupyter_mlx_embed/engine/prebuilt/``; on failure, leave the wheel pure."""
        if self.target_name != "wheel" or version != "standard":
            return
        if not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"):
            self.app.display_info("native CPU kernels not prebuilt: not Linux x86-64")
            return
        self.app.display_info("building the native CPU kernels into the wheel (about a minute)")
        self._scratch = tempfile.mkdtemp(prefix="jme-prebuilt-")
        try:
            native = _load_native(Path(self.root) / "jupyter_mlx_embed")
            files = native.build_prebuilt(Path(self._scratch))
        except Exception as exc:  # noqa: BLE001  (any failure: the pure wheel of before)
            self.app.display_warning(
                f"native CPU kernels not prebuilt ({exc}); the wheel is pure Python and "
                "builds them on first use"
            )
            self._clean()
            return
        finally:
            _unload_native()
        for path in files:
            build_data["force_include"][str(path)] = f"{PREBUILT_IN_WHEEL}/{path.name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        self.app.display_info(f"native CPU kernels prebuilt: {', '.join(p.name for p in files)}")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        """Remove the scratch folder once the wheel holds its files."""
        self._clean()

    def _clean(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
