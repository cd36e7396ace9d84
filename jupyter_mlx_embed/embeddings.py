"""``Embeddings`` (texts with their vectors) and search results (notebook layer, over the API).

Plain Python and numpy only, so that they work in scripts as well as in notebooks; rich
display goes through ``_repr_html_``, which Jupyter picks up without an IPython import.
String queries are embedded through :mod:`.api`, with the collection's model.
"""

from __future__ import annotations

import base64
import html
import json
import operator
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import api
from ._version import __version__
from .errors import EmbedError, InputTypeError, InvalidRequestError
from .fileio import atomic_path
from .options import EmbedOptions
from .quantization import calibration_ranges, quantize
from .ranking import Hit, SearchResults, count, import_pandas, shorten, top_k
from .results import EmbedResult
from .validation import to_strings

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "jupyter-mlx-embed/embeddings"
FORMAT_VERSION = 1

_PREVIEW_ROWS = 5
# Rows further than this from unit length are renormalised before taking dot products.
_UNIT_TOLERANCE = 1e-4

#: What ``Embeddings.explore`` calls: the explorer sits above this layer, so the package's
#: entry module registers it (:func:`register_explorer`) and this module never imports it.
_open_explorer: Callable[..., Any] | None = None


def register_explorer(open_explorer: Callable[..., Any]) -> None:
    """Make ``Embeddings.explore(labels, **options)`` return ``open_explorer(embeddings,
    labels, **options)``; importing ``jupyter_mlx_embed`` registers the similarity explorer."""
    global _open_explorer
    _open_explorer = open_explorer


class Embeddings:
    """Texts (or pictures) and their vectors from one model.

    Indexing returns another ``Embeddings``: ``e[2]`` has one row, ``e[1:3]``, ``e[[0, 2]]``
    and ``e[mask]`` (a boolean array of ``len(e)``) have the rows selected, in that order.
    The subset's vectors are a copy. ``np.asarray(e)`` gives the vectors without copying.

    Args:
        texts: One string per row.
        vectors: Array (texts x dimensions); stored as C-contiguous float32 (no copy when it
            already is). The engine's vectors are L2-normalised; others are normalised
            where cosine similarities are computed.
        model: Name of the model that produced the vectors; ``search`` embeds string
            queries with it.
        images: For pictures (``embed_images``, ``%embed_images``): each row's source, a
            file path, or a small JPEG thumbnail (bytes) of a picture that has no file; the
            texts then describe them (the path, or the picture's size). ``search("a red
            car")`` finds pictures with an image-text model's text tower.

    Raises:
        InputTypeError: ``texts`` is not a sequence of strings (also a ``TypeError``).
        TypeError: ``model`` is not a string.
        ValueError: ``vectors`` is not a finite 2-D numeric array with one row per text.
    """

    def __init__(
        self,
        texts: Sequence[str],
        vectors: np.ndarray,
        model: str,
        *,
        index: Sequence[Any] | None = None,
        skipped: Sequence[Any] = (),
        images: Sequence[str | bytes] | None = None,
    ) -> None:
        texts = to_strings(texts, name="texts")
        if not isinstance(model, str):
            raise TypeError(f"model must be a string, got {type(model).__name__}")
        array = np.asarray(vectors)
        if array.ndim != 2:
            raise ValueError(f"vectors must be 2-D (texts x dimensions), got shape {array.shape}")
        if array.dtype.kind not in "fiu":
            raise ValueError(f"vectors must be numeric, got dtype {array.dtype}")
        if len(array) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(array)} vectors")
        array = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(array).all():
            raise ValueError("vectors contain NaN or infinity")
        # Plain str, not np.str_, so that texts compare, print and serialise as usual.
        self.texts: list[str] = [str(text) for text in texts]
        self.vectors: np.ndarray = array
        self.model: str = model
        if index is not None and len(index) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(index)} index labels")
        #: The label of each row (a pandas Series' index), or None for positions 0..n-1.
        self.index: list[Any] | None = None if index is None else list(index)
        #: Labels (or positions) of the inputs left out by ``%embed --skip-invalid``.
        self.skipped: list[Any] = list(skipped)
        if images is not None and len(images) != len(self.texts):
            raise ValueError(f"{len(self.texts)} rows but {len(images)} image sources")
        #: Each row's picture (a path, or JPEG thumbnail bytes), or None for texts.
        self.images: list[str | bytes] | None = None if images is None else list(images)

    @property
    def modality(self) -> str:
        """What the rows are: ``text`` or ``image``."""
        return "text" if self.images is None else "image"

    @property
    def _noun(self) -> str:
        return "text" if self.images is None else "picture"

    @property
    def dimensions(self) -> int:
        """Values per vector."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, key: int | slice | Sequence[int] | np.ndarray) -> Embeddings:
        # numpy does the bounds checks, negative indices and mask-length checks for us.
        try:
            rows = np.arange(len(self))[key]
        except IndexError as exc:
            raise IndexError(f"{exc} (Embeddings of {len(self)} texts)") from exc
        rows = np.atleast_1d(rows)
        if rows.ndim != 1:
            raise TypeError(
                "Embeddings can be indexed by an int, a slice, a list of ints or a 1-D "
                f"boolean mask, not {type(key).__name__}"
            )
        index = None if self.index is None else [self.index[i] for i in rows]
        images = None if self.images is None else [self.images[i] for i in rows]
        return Embeddings(
            [self.texts[i] for i in rows],
            self.vectors[rows],
            self.model,
            index=index,
            images=images,
        )

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None or np.dtype(dtype) == self.vectors.dtype:
            return self.vectors.copy() if copy else self.vectors
        if copy is False:
            raise ValueError(f"converting float32 vectors to {np.dtype(dtype)} needs a copy")
        return self.vectors.astype(dtype)

    def search(
        self,
        query: str | np.ndarray,
        k: int = 5,
        *,
        rerank: str | None = None,
        candidates: int = 100,
    ) -> SearchResults:
        """The ``k`` texts most similar to ``query``, by cosine similarity; with ``rerank``,
        the ``candidates`` most similar reranked by that reranker (retrieve, then rerank).

        Args:
            query: A string, embedded with this collection's model and number of dimensions,
                or a vector of ``dimensions`` values (normalised here; not with ``rerank``,
                which reads the query's text).
            k: Number of hits; at most ``len(self)`` are returned.
            rerank: A reranker's name (a cross-encoder, e.g. ``ms-marco-MiniLM-L6-v2``).
            candidates: With ``rerank``: how many of the most similar texts it scores
                (at least ``k``).

        Returns:
            Hits from most to least similar (reranked: by the reranker's score, each with
            its cosine ``similarity``); equal scores keep index order.

        Raises:
            ValueError: ``k`` or ``candidates`` is below 1, the vector has the wrong shape or
                is zero, or ``rerank`` is given with a vector query.
            EmbedError: The string could not be embedded or reranked.
        """
        k = _checked_k(k)  # before embedding the query
        if rerank is not None and not isinstance(query, str):
            raise ValueError("rerank needs the query's text, not a vector")
        if rerank is not None and self.images is not None:
            raise ValueError("a reranker scores texts: pictures cannot be reranked")
        if isinstance(query, str):
            vector = api.embed(query, model=self.model, dimensions=self.dimensions)
            text: str | None = query
        else:
            vector = self._query_vector(query)
            text = None
        similarities = self.similarity(vector)[:, 0]
        if rerank is None:
            return self.rank(similarities, k, query=text)
        assert text is not None
        pool = top_k(similarities, min(max(k, _checked_k(candidates)), len(self)))
        ranking = api.rerank(text, [self.texts[i] for i in pool], model=rerank)
        return self.reranked(pool, ranking.scores, similarities, k, query=text, by=ranking.model)

    def reranked(
        self,
        pool: np.ndarray,
        scores: np.ndarray,
        similarities: np.ndarray,
        k: int,
        *,
        query: str,
        by: str,
    ) -> SearchResults:
        """The ``k`` rows of ``pool`` with the highest reranker ``scores`` (one per row of
        ``pool``), ranked as :meth:`rank` ranks, each with its ``similarities[row]`` to the
        query: what :meth:`search` with a reranker (``by``) gives."""
        order = top_k(np.asarray(scores), min(k, len(pool)))
        hits = [
            Hit(
                rank=rank,
                index=int(pool[j]),
                score=float(scores[j]),
                text=self.texts[int(pool[j])],
                similarity=float(similarities[pool[j]]),
                label=self.label(int(pool[j])),
            )
            for rank, j in enumerate(order, start=1)
        ]
        return SearchResults(hits, query=query, model=f"{self.model}, reranked by {by}")

    def rank(self, scores: np.ndarray, k: int = 5, *, query: str | None = None) -> SearchResults:
        """The ``k`` texts with the highest ``scores``, ranked as :meth:`search` ranks them.

        For scores computed once and used again, e.g. ``similarity(vector)[:, 0]``.

        Args:
            scores: One score per text.
            k: Number of hits; at most ``len(self)`` are returned.
            query: The query the scores answer, kept on the results.

        Raises:
            ValueError: ``k`` is below 1, or not one score per text.
        """
        k = _checked_k(k)
        scores = np.asarray(scores)
        if scores.shape != (len(self),):
            raise ValueError(
                f"scores must hold one score per text ({len(self)}), got shape {scores.shape}"
            )
        order = top_k(scores, min(k, len(self)))
        hits = [
            Hit(
                rank=rank,
                index=int(i),
                score=float(scores[i]),
                text=self.texts[i],
                label=self.label(int(i)),
                thumbnail=self._thumbnail(int(i)),
            )
            for rank, i in enumerate(order, start=1)
        ]
        return SearchResults(hits, query=query, model=self.model)

    def label(self, row: int) -> Any:
        """Row ``row``'s label in the table the texts came from, or None without labels."""
        return None if self.index is None else self.index[row]

    def _query_vector(self, query: Any) -> np.ndarray:
        vector = np.asarray(query, dtype=np.float32)
        if vector.shape != (self.dimensions,):
            raise ValueError(
                f"a query vector must have shape ({self.dimensions},), got {vector.shape}"
            )
        if not np.isfinite(vector).all() or not np.any(vector):
            raise ValueError("a query vector must be finite and non-zero")
        return vector

    def similarity(self, other: Embeddings | np.ndarray | None = None) -> np.ndarray:
        """Cosine similarities between these rows and ``other``'s.

        Args:
            other: Embeddings, or an array (rows x dimensions, or one vector); ``None``
                compares the rows with each other.

        Returns:
            float32 array of shape ``(len(self), len(other))``.

        Raises:
            ValueError: ``other`` has a different number of dimensions.
        """
        if other is None:
            unit = _unit_rows(self.vectors)
            return unit @ unit.T
        if isinstance(other, Embeddings):
            matrix = other.vectors
            what = f"other embeddings ({other.model!r})"
        else:
            matrix = np.asarray(other, dtype=np.float32)
            if matrix.ndim == 1:
                matrix = matrix[None, :]
            if matrix.ndim != 2:
                raise ValueError(f"other must be 1-D or 2-D, got shape {matrix.shape}")
            what = "other"
        if matrix.shape[1] != self.dimensions:
            raise ValueError(
                f"{what} has {matrix.shape[1]} dimensions but these embeddings have "
                f"{self.dimensions} ({self.model!r}); compare vectors of the same model and size"
            )
        return _unit_rows(self.vectors) @ _unit_rows(matrix).T

    def quantize(self, precision: str, ranges: str | np.ndarray = "calibrated") -> np.ndarray:
        """The vectors made small for a vector store (see :mod:`.quantization`).

        Args:
            precision: ``int8`` or ``uint8`` (a byte a dimension), ``binary`` or ``ubinary``
                (a bit a dimension, packed: ``ceil(d / 8)`` bytes).
            ranges: For ``int8``/``uint8``: ``"calibrated"``, each dimension's minimum and
                maximum over these vectors (sentence-transformers' way; keep
                ``quantization.calibration_ranges(vectors)`` to quantize queries alike);
                ``"fixed"``, the HTTP endpoint's ``encoding_format`` ranges (``±4/sqrt(d)``,
                the same for any batch); or a ``(2, d)`` array of lows and highs.

        Raises:
            ValueError: Unknown precision or ranges.
        """
        if not isinstance(ranges, str):
            return quantize(self.vectors, precision, ranges)
        if ranges not in ("calibrated", "fixed"):
            raise ValueError(f"ranges must be 'calibrated', 'fixed' or an array, got {ranges!r}")
        chosen = None if ranges == "fixed" else calibration_ranges(self.vectors)
        return quantize(self.vectors, precision, chosen)

    def explore(self, labels: Sequence[Any] | None = None, **kwargs: Any) -> Any:
        """An interactive map of these texts with live search (a Jupyter widget).

        Args:
            labels: One label per text, to colour the points by (categories).
            **kwargs: Options of :class:`~jupyter_mlx_embed.SimilarityExplorer`:
                ``data`` (a DataFrame aligned with these texts), ``color`` (one of its
                columns, or one value per text), ``tooltip`` (columns), ``projection``,
                ``k``, ...

        Returns:
            The widget, a :class:`~jupyter_mlx_embed.SimilarityExplorer`; display it (or
            leave it last in a cell).
        """
        if _open_explorer is None:  # registered when jupyter_mlx_embed is imported
            raise RuntimeError("the similarity explorer is not registered")
        return _open_explorer(self, labels, **kwargs)

    def to_pandas(self) -> pd.DataFrame:
        """A DataFrame with columns ``text`` and ``embedding`` (one float32 vector per cell),
        indexed by :attr:`index` when the texts came from a Series, so it joins back to the
        table they came from.

        Raises:
            ImportError: pandas is not installed.
        """
        pandas = import_pandas()
        return pandas.DataFrame(
            {"text": self.texts, "embedding": list(self.vectors.copy())}, index=self.index
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the texts, vectors, model name, index labels and :attr:`skipped` to ``path``
        as a numpy ``.npz`` file (no pickles: labels are kept as JSON keeps them, others as
        text).

        The path is used exactly as given (no suffix is added). The file is written next to
        the target and then renamed onto it, so a crash never leaves a half-written file and
        an existing file stays intact until the new one is complete.

        Returns:
            The path written.
        """
        target = Path(path)
        if any(text.endswith("\0") for text in self.texts):
            # numpy's fixed-width unicode arrays drop trailing NULs: refuse rather than
            # write a file that does not load back as saved.
            raise ValueError("texts ending with a NUL character cannot be saved")
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model,
            "package_version": __version__,
        }
        if self.index is not None:
            meta["index"] = [_json_label(label) for label in self.index]
        if self.skipped:
            meta["skipped"] = [_json_label(label) for label in self.skipped]
        arrays: dict[str, np.ndarray] = {}
        if self.images is not None:
            # Paths in the metadata; thumbnails one after the other in one byte array.
            meta["images"] = [item if isinstance(item, str) else None for item in self.images]
            thumbs = [item for item in self.images if isinstance(item, bytes)]
            arrays["thumbnails"] = np.frombuffer(b"".join(thumbs), dtype=np.uint8)
            arrays["thumbnail_sizes"] = np.array([len(t) for t in thumbs], dtype=np.int64)
        texts = np.array(self.texts, dtype=np.str_)
        # open() rather than mkstemp: mkstemp creates files 0600, while a saved file should
        # get the usual permissions (0666 less the umask).
        with atomic_path(target) as temp, open(temp, "xb") as file:
            arrays.update(
                vectors=self.vectors, texts=texts, meta=np.array(json.dumps(meta), dtype=np.str_)
            )
            np.savez(file, allow_pickle=False, **arrays)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Embeddings:
        """Read embeddings written by :meth:`save`.

        Raises:
            ValueError: The file is not a jupyter-mlx-embed embeddings file, or comes from a
                newer version of the format.
            OSError: The file cannot be read.
        """
        not_ours = f"{os.fspath(path)!r} is not a jupyter-mlx-embed embeddings file"
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(not_ours) from exc
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{not_ours} (a single .npy array)")
        with data:
            if not {"meta", "texts", "vectors"} <= set(data.files):
                raise ValueError(f"{not_ours} (arrays: {', '.join(sorted(data.files)) or 'none'})")
            try:
                meta = json.loads(str(data["meta"][()]))
                texts, vectors = data["texts"], data["vectors"]
                images = _saved_images(meta, data)
            except (ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
                raise ValueError(not_ours) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{not_ours} (no format marker)")
        version = meta.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{os.fspath(path)!r} uses format version {version!r}; this version of "
                f"jupyter-mlx-embed reads version {FORMAT_VERSION}: upgrade the package"
            )
        if texts.ndim != 1 or texts.dtype.kind != "U" or not isinstance(meta.get("model"), str):
            raise ValueError(f"{not_ours} (malformed texts or model)")
        return cls(
            texts.tolist(),
            vectors,
            meta["model"],
            index=meta.get("index"),
            skipped=meta.get("skipped", ()),  # absent from older files
            images=images,
        )

    def __repr__(self) -> str:
        return (
            f"Embeddings({count(len(self), self._noun)}, model={self.model!r}, "
            f"dimensions={self.dimensions})"
        )

    def _repr_html_(self) -> str:
        items = "".join(
            f"<li>{self._preview(i)}{html.escape(shorten(text))}</li>"
            for i, text in enumerate(self.texts[:_PREVIEW_ROWS])
        )
        more = len(self) - _PREVIEW_ROWS
        return (
            '<div class="jme-embeddings">'
            f"<strong>Embeddings</strong>: {count(len(self), self._noun)}, "
            f"model <code>{html.escape(self.model)}</code>, {self.dimensions} dimensions"
            + (f"<ol>{items}</ol>" if items else "")
            + (f"<div>… and {more} more</div>" if more > 0 else "")
            + "</div>"
        )

    def _thumbnail(self, row: int) -> bytes | None:
        """A small JPEG of row ``row``'s picture (None for texts, or an unreadable file)."""
        if self.images is None:
            return None
        from .images import thumbnail

        source = self.images[row]
        try:
            return source if isinstance(source, bytes) else thumbnail(source, 96)
        except (EmbedError, OSError, ValueError):
            return None

    def _preview(self, row: int) -> str:
        """An ``<img>`` of row ``row``'s picture (a thumbnail, inline), or nothing."""
        if self.images is None:
            return ""
        jpeg = self._thumbnail(row)
        if jpeg is None:
            return "(unreadable) "
        data = base64.b64encode(jpeg).decode("ascii")
        return f'<img src="data:image/jpeg;base64,{data}" style="height:48px"> '


def embed_picture_collection(
    items: Sequence[Any],
    options: EmbedOptions,
    *,
    skip_invalid: bool = False,
    labels: Sequence[Any] | None = None,
    progress: Any = None,
) -> Embeddings:
    """Embed a collection of pictures chunk by chunk (what ``%embed_images`` and
    ``explore_images`` do): an ``Embeddings`` keeping each picture's source (its path, or a
    thumbnail).

    Args:
        items: Pictures (see :func:`embed_images`).
        options: Model and dimensions.
        skip_invalid: Leave out items that are not pictures or cannot be decoded instead of
            failing: a chunk refused for a bad picture is sent again picture by picture.
            Their labels (else positions) are the result's ``skipped``.
        labels: Each item's label (a Series' index): the result's ``index``.
        progress: Something with ``update(n)`` (a tqdm bar), told of each chunk.

    Raises:
        InputTypeError: An item is not a picture (naming it), without ``skip_invalid``.
        EmbedError: A picture cannot be decoded (without ``skip_invalid``), the model embeds
            no pictures, nothing was left to embed, or the embedding failed.
    """
    from .images import describe, is_image_item, source_of

    keep = [i for i, item in enumerate(items) if is_image_item(item)]
    if len(keep) < len(items) and not skip_invalid:
        first = next(i for i, item in enumerate(items) if not is_image_item(item))
        raise InputTypeError(
            f"item {first} is a {type(items[first]).__name__} ({items[first]!r:.40}), not a "
            "picture; skip_invalid (--skip-invalid) leaves such items out",
            param="input",
        )
    transport = api.get_transport()

    def send(positions: list[int]) -> EmbedResult:
        future = transport.submit_images(
            [items[i] for i in positions], options, first_index=positions[0]
        )
        return future.result(timeout=transport.timeout)

    parts: list[EmbedResult] = []
    done: list[int] = []
    if progress is not None and len(keep) < len(items):
        progress.update(len(items) - len(keep))
    for start in range(0, len(keep), api.IMAGE_CHUNK):
        positions = keep[start : start + api.IMAGE_CHUNK]
        try:
            answers = [(positions, send(positions))]
        except InvalidRequestError as exc:
            if not skip_invalid or exc.code != "invalid_image":
                raise
            answers = []
            for i in positions:
                try:
                    answers.append(([i], send([i])))
                except InvalidRequestError as one:
                    if one.code != "invalid_image":
                        raise
        for where, result in answers:
            parts.append(result)
            done.extend(where)
        if progress is not None:
            progress.update(len(positions))
    if not done:
        raise InvalidRequestError("no item is a readable picture", param="input")
    result = EmbedResult.concatenate(parts)
    bad = sorted(set(range(len(items))) - set(done))
    return Embeddings(
        [describe(items[i]) for i in done],
        result.vectors,
        result.model,
        index=None if labels is None else [labels[i] for i in done],
        skipped=[i if labels is None else labels[i] for i in bad],
        images=[source_of(items[i]) for i in done],
    )


def _saved_images(meta: dict[str, Any], data: Any) -> list[str | bytes] | None:
    """The picture sources :meth:`Embeddings.save` wrote: paths from the metadata, and
    thumbnails cut from their byte array where a row has no path."""
    paths = meta.get("images")
    if paths is None:
        return None
    blob = data["thumbnails"].tobytes()
    ends = np.cumsum(data["thumbnail_sizes"]).tolist()
    starts = [0, *ends[:-1]] if ends else []
    thumbs = iter([blob[start:end] for start, end in zip(starts, ends, strict=True)])
    return [path if isinstance(path, str) else next(thumbs) for path in paths]


def _json_label(label: Any) -> Any:
    """An index label as JSON keeps it (numbers, strings, None); anything else as text."""
    if label is None or isinstance(label, (str, int, float, bool)):
        return label
    return str(label)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` with unit-length rows (zero rows stay zero); itself when already so."""
    # einsum sums the squares row by row without an n x d temporary (np.linalg.norm makes
    # one: 1.5 GB for a million 384-d rows, on every query).
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))[:, None]
    if np.all(np.abs(norms - 1) <= _UNIT_TOLERANCE):
        return matrix
    return (matrix / np.where(norms > 0, norms, 1)).astype(np.float32, copy=False)


def _checked_k(k: int) -> int:
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return k
