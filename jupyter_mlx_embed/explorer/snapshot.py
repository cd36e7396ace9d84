"""The static PNG of the explorer's map (notebook layer), for saved notebooks.

The widget's display bundle carries ``image/png`` (the map drawn here with numpy and Pillow)
beside the widget view. :class:`Snapshot` displays it with a display id and redraws it off the
kernel's thread when the map or its colours change, so renderers without a kernel (GitHub,
nbconvert) show the map as it was.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .background import Handoff
from .data import LEVELS, Coloring

log = logging.getLogger(__name__)

#: Seconds of quiet after a colour change before the static PNG is redrawn.
PNG_DELAY = 1.0
#: From this many points the static map's frame leaves out the outermost 0.1% on each side.
OUTLIER_MIN_POINTS = 1_000

#: What a drawing shows: (map version, colour, clusters drawn); equal keys, equal pictures.
Key = tuple[int, str, bool]


@dataclass(frozen=True)
class Picture:
    """What :func:`render_png` draws: the map, its colours, cluster labels and a caption."""

    coords: np.ndarray
    coloring: Coloring
    labels: Sequence[tuple[str, float, float]]
    caption: str


class Snapshot:
    """The PNG of one explorer: drawn on demand, cached by its :data:`Key`, and kept up to
    date in the display it was shown in.

    Args:
        key: What the map on show is now (cheap: compared before every drawing).
        picture: What to draw now (the map's coordinates, colours, labels, caption).
        bundle: The widget's full display bundle ``(data, metadata)``, or ``None``.
        handoff: Where a drawing made on the timer's thread is published (the kernel's loop).
    """

    def __init__(
        self,
        *,
        key: Callable[[], Key],
        picture: Callable[[], Picture],
        bundle: Callable[[], Any],
        handoff: Handoff,
    ) -> None:
        self._key = key
        self._picture = picture
        self._bundle = bundle
        self._handoff = handoff
        self.display_id: str | None = None
        # The last PNG drawn and what it shows.
        self._png: tuple[Key, bytes] | None = None
        self._timer: threading.Timer | None = None

    def png(self) -> bytes:
        """The PNG of the map on show (drawn now unless the last drawing still shows it)."""
        cached = self._png
        if cached is not None and cached[0] == self._key():
            return cached[1]
        key, png = self._key(), self._render()
        self._png = (key, png)
        return png

    def show(self, bundle: Any) -> None:
        """Display ``bundle`` with a display id, so that the PNG can follow the map."""
        from IPython.display import display

        if bundle is None:
            return
        data, metadata = bundle
        if self.display_id is None:
            self.display_id = uuid.uuid4().hex
        display(data, metadata=metadata, raw=True, display_id=self.display_id)

    def schedule(self, delay: float = PNG_DELAY) -> None:
        """Redraw the PNG off the kernel's thread (it takes a while at a million points),
        after ``delay`` seconds without another change, then update the display."""
        if self.display_id is None:
            return
        if self._timer is not None:
            self._timer.cancel()

        def render() -> None:
            try:
                key, png = self._key(), self._render()
            except Exception:  # the live map is unaffected: logged only
                log.exception("similarity explorer: cannot draw the static map")
                return
            self._handoff.post(self._publish, key, png)

        self._timer = threading.Timer(delay, render)
        self._timer.daemon = True
        self._timer.start()

    def flush(self) -> None:
        """Publish the PNG now if the one on show is out of date (instead of the timer)."""
        if self.display_id is None or (self._png is not None and self._png[0] == self._key()):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._publish(self._key(), self._render())

    def close(self) -> None:
        """Drop a pending update; the display is no longer followed."""
        if self._timer is not None:
            self._timer.cancel()
        self.display_id = None

    def _render(self) -> bytes:
        picture = self._picture()
        return render_png(
            picture.coords, picture.coloring, labels=picture.labels, caption=picture.caption
        )

    def _publish(self, key: Key, png: bytes) -> None:
        if key != self._key() or self.display_id is None:
            return  # the map changed again: a newer drawing is on its way
        from IPython.display import update_display

        self._png = (key, png)
        bundle = self._bundle()
        if bundle is not None:
            data, metadata = bundle
            update_display(data, metadata=metadata, raw=True, display_id=self.display_id)


def render_png(
    coords: np.ndarray,
    coloring: Coloring,
    *,
    width: int = 640,
    height: int = 400,
    labels: Sequence[tuple[str, float, float]] = (),
    caption: str = "",
) -> bytes:
    """A static picture of the map (for saved notebooks), drawn with numpy and Pillow.

    Points are splatted onto a pixel grid (discs for small maps, single pixels for large
    ones); a pixel's colour is the mean colour of its points, its opacity grows with their
    number (translucent points on large maps), so dense regions stand out as on the live
    map.

    Args:
        coords: Map positions (n x 2).
        coloring: The points' colours.
        width: Image width in pixels.
        height: Image height in pixels.
        labels: ``(text, x, y)`` in map coordinates, drawn where they do not collide.
        caption: A line of text at the bottom left (what the map shows).

    Returns:
        PNG bytes.
    """
    from PIL import Image, ImageDraw

    pad = 12
    xy = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    n = len(xy)
    # The caption gets a line of its own below the points.
    px, py, to_px = _fit(xy, width, height - (14 if caption else 0), pad)
    codes, palette = coloring.point_colors()
    radius = 4 if n <= 1_000 else 2 if n <= 20_000 else 1 if n <= 200_000 else 0
    sums = np.zeros((height * width, 3))
    counts = np.zeros(height * width)
    colours = palette[codes].astype(np.float64) if n else np.zeros((0, 3))
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius + 1:
                continue
            x, y = px + dx, py + dy
            inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            cell = y[inside] * width + x[inside]
            counts += np.bincount(cell, minlength=height * width)
            for channel in range(3):
                sums[:, channel] += np.bincount(
                    cell, weights=colours[inside, channel], minlength=height * width
                )
    filled = counts > 0
    # As if each point were painted with opacity `opacity`: solid dots on small maps,
    # translucent ones on large maps, where the density then shows.
    opacity = 1.0 if n <= 20_000 else 0.6 if n <= 200_000 else 0.3
    alpha = 1.0 - (1.0 - opacity) ** counts
    mean = np.zeros_like(sums)
    mean[filled] = sums[filled] / counts[filled, None]
    white = np.full(3, 255.0)
    pixels = white * (1 - alpha[:, None]) + mean * alpha[:, None]
    image = Image.fromarray(np.rint(pixels).astype(np.uint8).reshape(height, width, 3), "RGB")
    draw = ImageDraw.Draw(image)
    legend = _draw_legend(draw, coloring)
    if labels:
        _draw_labels(draw, labels, to_px, width, height, taken=[legend])
    if caption:
        draw.text((pad, height - pad), caption, fill=(110, 110, 110), anchor="ld")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _fit(xy: np.ndarray, width: int, height: int, pad: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """Pixel positions of ``xy`` fitted into the image with the aspect ratio kept."""
    if len(xy) > OUTLIER_MIN_POINTS:
        # A few stray points (UMAP leaves some far out) would shrink everything else into a
        # corner: the frame holds all but the outermost 0.1% on each side.
        lo, hi = np.percentile(xy, [0.1, 99.9], axis=0)
        margin = 0.02 * (hi - lo)
        lo, hi = lo - margin, hi + margin
    elif len(xy):
        lo, hi = xy.min(axis=0), xy.max(axis=0)
    else:
        lo, hi = np.zeros(2), np.ones(2)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = min((width - 2 * pad) / span[0], (height - 2 * pad) / span[1])
    offset = np.array([width, height]) / 2 - (lo + hi) / 2 * scale * np.array([1, -1])

    def to_px(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.rint(points[:, 0] * scale + offset[0]).astype(np.int64)
        y = np.rint(-points[:, 1] * scale + offset[1]).astype(np.int64)
        return x, y

    px, py = to_px(xy)
    return px, py, to_px


def _draw_labels(
    draw: Any,
    labels: Sequence[tuple[str, float, float]],
    to_px: Any,
    width: int,
    height: int,
    taken: list[tuple[float, float, float, float]],
) -> None:
    """Cluster labels at their centres, the first ones first, skipping any that would
    overlap one already drawn or a box in ``taken`` (the same rule as the live map's)."""
    points = np.array([[x, y] for _, x, y in labels], dtype=np.float64)
    xs, ys = to_px(points)
    for (text, _, _), x, y in zip(labels, xs, ys, strict=True):
        left, top, right, bottom = draw.textbbox((0, 0), text)
        w, h = right - left + 6, bottom - top + 4
        box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
        if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
            continue
        if any(_overlap(box, other) for other in taken):
            continue
        taken.append(box)
        draw.rectangle(box, fill=(255, 255, 255), outline=(200, 200, 200))
        draw.text((box[0] + 3 - left, box[1] + 2 - top), text, fill=(30, 30, 30))


def _draw_legend(
    draw: Any, coloring: Coloring, most: int = 10
) -> tuple[float, float, float, float]:
    """The colour key in the top left corner: categories (the most frequent ``most``) or
    the numeric range. Returns the box it covers (labels keep out of it)."""
    x, y, line = 8, 8, 14
    if coloring.kind == "categorical":
        draw.text((x, y), f"{coloring.column}:", fill=(90, 90, 90))
        shown = list(zip(coloring.names, coloring.palette, strict=True))
        right = x + draw.textlength(f"{coloring.column}:")
        for i, (name, colour) in enumerate(shown[:most], start=1):
            top = y + i * line
            draw.ellipse((x, top + 3, x + 8, top + 11), fill=colour)
            draw.text((x + 12, top), name[:30], fill=(40, 40, 40))
            right = max(right, x + 12 + draw.textlength(name[:30]))
        rows = min(len(shown), most) + 1
        if len(shown) > most:
            more = f"… {len(shown) - most} more"
            draw.text((x, y + rows * line), more, fill=(90, 90, 90))
            right, rows = max(right, x + draw.textlength(more)), rows + 1
        return (0, 0, right + 4, y + rows * line + 2)
    if coloring.kind == "numeric":
        draw.text((x, y), f"{coloring.column}: {coloring.lo:.4g}", fill=(40, 40, 40))
        left = x + draw.textlength(f"{coloring.column}: {coloring.lo:.4g}") + 6
        levels = coloring.palette[:LEVELS]
        for i in range(100):
            colour = levels[round(i / 99 * (len(levels) - 1))]
            draw.line((left + i, y + 2, left + i, y + 10), fill=colour)
        draw.text((left + 106, y), f"{coloring.hi:.4g}", fill=(40, 40, 40))
        return (0, 0, left + 106 + draw.textlength(f"{coloring.hi:.4g}") + 4, y + line + 2)
    return (0, 0, 0, 0)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
