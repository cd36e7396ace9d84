"""Pictures as an image tower takes them: decoded, converted to RGB and resized as the model's
published image processor does (pure: Pillow and numpy, no MLX).

Inputs are file paths (``str`` or ``os.PathLike``), encoded files (``bytes``), PIL images or
``(h, w, 3)`` / ``(h, w)`` uint8 arrays. Over HTTP only ``data:image/...;base64,`` URIs are
taken (:func:`from_data_uri`), never a path or URL. Each picture's cost is bounded before it
is decoded: its encoded size and its pixel count (read from the header) are checked first.
A picture is keyed for the vector cache by a hash of its content (:func:`content_key`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidRequestError, elide
from .modelspec import ImageInput

#: What ``embed_images`` takes as one picture.
ImageItem = Any  # str | os.PathLike[str] | bytes | PIL.Image.Image | numpy.ndarray

_DATA_URI = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


def image_error(index: int, what: str, param: str = "input") -> InvalidRequestError:
    """The error for a picture that cannot be taken: HTTP 400 ``invalid_image``, naming it."""
    return InvalidRequestError(f"{param}[{index}]: {what}", param=param, code="invalid_image")


def from_data_uri(value: Any, index: int, *, max_bytes: int, param: str = "input") -> bytes:
    """The encoded picture of a ``data:image/...;base64,...`` URI (JSON's only way to carry
    one), checked for size before decoding.

    Raises:
        InvalidRequestError: Not such a URI (paths and URLs included), bad base64, or more
            than ``max_bytes`` once decoded.
    """
    if not isinstance(value, str) or not _DATA_URI.match(value):
        raise image_error(
            index,
            f"an image must be a data URI (data:image/png;base64,...); got {elide(value)}. "
            "URLs and file paths are not fetched",
            param,
        )
    payload = value[value.index(",") + 1 :]
    if len(payload) * 3 // 4 > max_bytes:
        raise image_error(index, f"the image is larger than {max_bytes} bytes", param)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise image_error(index, f"the image's base64 is invalid ({exc})", param) from exc


#: The picture formats told apart by their first bytes, for a data URI's media type.
_SIGNATURES = (
    (b"\x89PNG", "png"),
    (b"\xff\xd8", "jpeg"),
    (b"GIF8", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def encoded(item: ImageItem) -> bytes:
    """A picture as a file's bytes, to send over HTTP: a path's or bytes' own content, a PIL
    image or an array as PNG (lossless: the server sees these pixels).

    Raises:
        OSError: A path cannot be read.
    """
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, (str, os.PathLike)):
        return Path(item).read_bytes()
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(item)) if isinstance(item, np.ndarray) else item
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def data_uri(content: bytes) -> str:
    """A ``data:image/...;base64,`` URI of a picture file's bytes (what v1/embeddings takes)."""
    kind = "png"
    for signature, name in _SIGNATURES:
        if content.startswith(signature):
            kind = name
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        kind = "webp"
    return f"data:image/{kind};base64,{base64.b64encode(content).decode('ascii')}"


def content_key(item: ImageItem) -> str:
    """A hash of a picture's content (the vector cache's key for it): of the file's bytes for
    a path or bytes, of the pixels (with mode and size) for a PIL image or an array.

    Raises:
        OSError: A path cannot be read.
    """
    digest = hashlib.blake2b(digest_size=20)
    if isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(b"file:")
        digest.update(item)
    elif isinstance(item, (str, os.PathLike)):
        digest.update(b"file:")
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    elif isinstance(item, np.ndarray):
        digest.update(f"array:{item.dtype.str}:{item.shape}:".encode())
        digest.update(np.ascontiguousarray(item).tobytes())
    else:  # a PIL image
        digest.update(f"pil:{item.mode}:{item.size}:".encode())
        digest.update(item.tobytes())
    return digest.hexdigest()


def describe(item: ImageItem) -> str:
    """A short description of an input for messages and for ``Embeddings`` (its path, or
    its kind and size)."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    if isinstance(item, np.ndarray):
        return f"<array {'x'.join(map(str, item.shape))}>"
    size = getattr(item, "size", None)
    return f"<image {size[0]}x{size[1]}>" if isinstance(size, tuple) else f"<{type(item).__name__}>"


def as_pictures(value: Any) -> tuple[list[Any], bool]:
    """The pictures of ``value`` and whether it was one picture: a path, bytes, a PIL image or
    one array is one; a 4-D array is a batch of arrays; anything else is iterated.

    Raises:
        TypeError: ``value`` is neither a picture nor iterable.
    """
    if isinstance(value, np.ndarray):
        return (list(value), False) if value.ndim == 4 else ([value], True)
    if is_image_item(value):
        return [value], True
    return list(value), False


def read_picture(item: ImageItem, index: int, *, max_bytes: int) -> ImageItem:
    """A file path's content (checked for size before it is read), so that its key and its
    pixels come from one read; other pictures as they are.

    Raises:
        InvalidRequestError: No such file, an unreadable one, or one over ``max_bytes``.
    """
    if not isinstance(item, (str, os.PathLike)):
        return item
    path = Path(item)
    try:
        if not path.is_file():
            raise image_error(index, f"no such image file: {os.fspath(item)}")
        if path.stat().st_size > max_bytes:
            raise image_error(index, f"the file is larger than {max_bytes} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise image_error(index, f"cannot read the image ({exc})") from exc


def is_image_item(item: Any) -> bool:
    """Whether ``item`` is one of the picture kinds :func:`load_pixels` takes."""
    if isinstance(item, (bytes, bytearray, memoryview, str, os.PathLike, np.ndarray)):
        return True
    return hasattr(item, "mode") and hasattr(item, "convert") and hasattr(item, "size")


def load_pixels(
    item: ImageItem, image: ImageInput, *, index: int, max_pixels: int, max_bytes: int
) -> np.ndarray:
    """A picture as the model's image processor makes it, before rescaling: RGB (transparent
    parts on white, as transformers converts), resized to the tower's size with the
    processor's filter, ``(height, width, 3)`` uint8.

    Raises:
        InvalidRequestError: The picture cannot be read or decoded, is larger than
            ``max_bytes`` (encoded) or ``max_pixels``, or is an array of another shape or
            dtype; the message names ``input[index]``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        picture = _open(item, index, max_bytes=max_bytes)
        width, height = picture.size
        if width * height > max_pixels:
            raise image_error(
                index,
                f"the image has {width} x {height} pixels, more than the maximum of {max_pixels}",
                "input",
            )
        if width < 1 or height < 1:
            raise image_error(index, "the image is empty", "input")
        picture = _rgb(picture)
        size = (image.width, image.height)
        if picture.size != size:
            picture = picture.resize(
                size, resample=getattr(Image.Resampling, image.resample.upper())
            )
        return np.asarray(picture, dtype=np.uint8)
    except InvalidRequestError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own bound, far above ours
        raise image_error(
            index, f"the image has more pixels than the maximum of {max_pixels}"
        ) from exc
    except UnidentifiedImageError as exc:
        raise image_error(
            index, "not a picture file that Pillow can decode (PNG, JPEG, WebP, GIF, ...)"
        ) from exc
    except (
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        raise image_error(index, f"cannot read the image ({exc})", "input") from exc


def _open(item: ImageItem, index: int, *, max_bytes: int) -> Any:
    """A PIL image of ``item`` (lazily decoded for files: only the header is read here)."""
    from PIL import Image

    if isinstance(item, (bytes, bytearray, memoryview)):
        if len(item) > max_bytes:
            raise image_error(index, f"the image is larger than {max_bytes} bytes", "input")
        return Image.open(io.BytesIO(bytes(item)))
    if isinstance(item, (str, os.PathLike)):
        return Image.open(io.BytesIO(read_picture(item, index, max_bytes=max_bytes)))
    if isinstance(item, np.ndarray):
        if (
            item.dtype != np.uint8
            or item.ndim not in (2, 3)
            or (item.ndim == 3 and item.shape[2] not in (3, 4))
        ):
            raise image_error(
                index,
                f"an image array must be (h, w, 3), (h, w, 4) or (h, w) uint8; got "
                f"{item.shape} {item.dtype}",
                "input",
            )
        return Image.fromarray(np.ascontiguousarray(item))
    if is_image_item(item):
        return item
    raise image_error(
        index,
        f"expected a file path, bytes, a PIL image or a uint8 array; got {type(item).__name__}",
        "input",
    )


def _rgb(picture: Any) -> Any:
    """RGB as transformers' ``convert_rgb``: a picture with transparency composited on white."""
    from PIL import Image

    if picture.mode == "RGB":
        return picture
    rgba = picture.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def normalise(pixels: np.ndarray, image: ImageInput) -> np.ndarray:
    """``(n, h, w, 3)`` uint8 pixels as the tower takes them: float32
    ``(v * rescale - mean) / std`` per channel."""
    mean = np.asarray(image.mean, dtype=np.float32)
    std = np.asarray(image.std, dtype=np.float32)
    out = pixels.astype(np.float32) * np.float32(image.rescale)
    out -= mean
    out /= std
    return out


#: Longest side of the thumbnails kept for in-memory pictures and shown in tables.
THUMBNAIL_SIDE = 128


def thumbnail(item: ImageItem, side: int = THUMBNAIL_SIDE) -> bytes:
    """A small JPEG of a picture (its longest side ``side`` pixels), for tables and for
    ``Embeddings`` of pictures that have no file.

    Raises:
        OSError: The picture cannot be read or decoded.
        ValueError: Likewise (Pillow raises both).
    """
    picture = _open(item, 0, max_bytes=1 << 40)
    picture.draft("RGB", (side, side))  # JPEG: decode at a reduced scale
    picture = _rgb(picture)
    picture.thumbnail((side, side))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=85)
    return out.getvalue()


#: Files a folder contributes to ``%embed_images`` and ``explore_images`` (what Pillow reads).
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def picture_files(pattern: str) -> list[str]:
    """The picture files a folder (its pictures, not its sub-folders') or a glob (``**``
    recursive) names, sorted, as absolute paths; a file is itself."""
    import glob

    path = os.path.expanduser(pattern)
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        found = [os.path.join(path, n) for n in names if n.lower().endswith(PICTURE_SUFFIXES)]
    elif glob.has_magic(path):
        found = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
    else:
        found = [path] if os.path.isfile(path) else []
    return [os.path.abspath(f) for f in found]


def source_of(item: ImageItem) -> str | bytes:
    """What ``Embeddings`` keeps of a picture: its absolute path, else a thumbnail.

    Raises:
        InvalidRequestError, OSError, ValueError: A picture with no file cannot be decoded.
    """
    if isinstance(item, (str, os.PathLike)):
        return os.path.abspath(os.fspath(item))
    return thumbnail(item)
