"""The part files of a resumable file job and their manifest (core layer): which parts of
:func:`.filejob.embed_file`'s output are finished, whether they belong to this job (its
arguments, input and resolved model, as the manifest records them), writing each part
atomically and combining them into the output.

``pyarrow`` is imported when parts are written or combined.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequestError
from ..fileio import atomic_path

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

_MANIFEST = "manifest.json"


class PartFiles:
    """The numbered part files of one job, next to its output, and their manifest."""

    def __init__(self, output: Path, manifest: dict[str, Any], rows: int, part_rows: int):
        self.folder = output.with_name(output.name + ".parts")
        self.manifest = manifest
        self.part_rows = part_rows
        self.bounds = [(s, min(s + part_rows, rows)) for s in range(0, rows, part_rows)]

    def path(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}.parquet"

    def size(self, index: int) -> int:
        start, stop = self.bounds[index]
        return stop - start

    def index_of(self, row: int) -> int:
        return row // self.part_rows

    def open(self) -> list[int]:
        """Indices of the finished parts (after clearing those of another job).

        Raises:
            InvalidRequestError: The parts were made by the same arguments with another model.
        """
        saved = self.folder / _MANIFEST
        if self.folder.is_dir():
            try:
                old = json.loads(saved.read_text())
            except (OSError, ValueError):
                old = None
            if _job_of(old) != _job_of(self.manifest):
                log.warning("%s holds parts of another job; starting over", self.folder)
                shutil.rmtree(self.folder)
            elif old["model_identity"] != self.manifest["model_identity"]:
                self._refuse_another_model(old)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Temporaries of writes cut short (a killed process): atomic_path's ``.NAME.*.tmp.EXT``,
        # and ``NAME.tmp`` of versions before it.
        for pattern in (".*.tmp.*", "*.tmp"):
            for stale in self.folder.glob(pattern):
                stale.unlink()
        with atomic_path(saved) as tmp:
            tmp.write_text(json.dumps(self.manifest, indent=1))
        return [i for i in range(len(self.bounds)) if self.path(i).exists()]

    def _refuse_another_model(self, old: dict[str, Any]) -> None:
        """Stop a rerun whose arguments are the same but whose model is not. Changed arguments
        start over: the user asked for another job. The same arguments resolving another
        model mean that the environment changed (the default model or model roots) or the
        model's files did: resuming would mix two models' vectors in one output, and
        starting over would silently throw the finished parts away. So nothing is done and
        the message says how to do either. A folder without finished parts just starts over.
        """
        finished = len(list(self.folder.glob("part-*.parquet")))
        if not finished:
            shutil.rmtree(self.folder)
            return
        then, now = old["resolved_model"], self.manifest["resolved_model"]
        then = then if isinstance(then, dict) else {}
        raise InvalidRequestError(
            f"{self.folder} holds {finished} finished parts made with another model: "
            f"{then.get('name')!r} ({then.get('path')}) then, {now['name']!r} "
            f"({now['path']}) now, from the same arguments (the default model or the model "
            "roots in the environment changed, or the model's files did). Resuming would mix "
            "two models' vectors. To resume, run with the settings of the first run; to "
            f"start over with this model, delete {self.folder}",
            param="model",
            code="parts_of_another_model",
        )

    def write(self, index: int, table: pa.Table) -> None:
        import pyarrow.parquet

        with atomic_path(self.path(index)) as tmp:
            pyarrow.parquet.write_table(table, tmp)

    def combine(self, output: Path) -> None:
        """Concatenate the parts into ``output`` (atomically), then remove them."""
        import pyarrow.parquet

        with atomic_path(output) as tmp:
            writer = None
            try:
                for i in range(len(self.bounds)):
                    part = pyarrow.parquet.read_table(self.path(i))
                    if writer is None:
                        writer = pyarrow.parquet.ParquetWriter(tmp, part.schema)
                    writer.write_table(part)
            finally:
                if writer is not None:
                    writer.close()
        shutil.rmtree(self.folder)


#: Manifest fields that say which model the job resolved (compared apart from the others).
_MODEL_FIELDS = ("model_identity", "resolved_model")


def _job_of(manifest: Any) -> Any:
    """A manifest without its resolved model: the job's arguments and input."""
    if not isinstance(manifest, dict) or not all(k in manifest for k in _MODEL_FIELDS):
        return manifest
    return {k: v for k, v in manifest.items() if k not in _MODEL_FIELDS}
