/**
 * Colour scales drawn in the browser: the similarity ramp and the heatmap's. The point
 * palettes (categories, numeric columns) come from Python with the colour codes.
 */

export type RGB = [number, number, number];

// Stops of matplotlib's viridis and plasma (perceptually uniform, colour-blind safe).
const VIRIDIS: readonly RGB[] = [
  [68, 1, 84],
  [72, 40, 120],
  [62, 74, 137],
  [49, 104, 142],
  [38, 130, 142],
  [31, 158, 137],
  [53, 183, 121],
  [110, 206, 88],
  [181, 222, 43],
  [253, 231, 37]
];

const PLASMA: readonly RGB[] = [
  [13, 8, 135],
  [75, 3, 161],
  [125, 3, 168],
  [168, 34, 150],
  [203, 70, 121],
  [229, 107, 93],
  [248, 148, 65],
  [253, 195, 40],
  [240, 249, 33]
];

function ramp(stops: readonly RGB[], t: number): RGB {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = stops[i];
  const b = stops[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

export function viridis(t: number): RGB {
  return ramp(VIRIDIS, t);
}

export function mix(a: RGB, b: RGB, t: number): RGB {
  return [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
}

/** The colour of points greyed out by the filter: a grey faded far into the background. */
export function dimmed(background: RGB): RGB {
  return mix([150, 150, 150], background, 0.7);
}

export function css(c: RGB): string {
  return `rgb(${Math.round(c[0])}, ${Math.round(c[1])}, ${Math.round(c[2])})`;
}

/**
 * Similarity colour for `t` in [0, 1]: plasma, faded towards the background at the low end
 * so that the best matches stand out in either theme: on dark backgrounds they are bright
 * (plasma's yellow end), on light ones dark (its blue-purple end; no yellow on white).
 */
export function similarity(t: number, background: RGB): RGB {
  const at = isDark(background) ? 0.15 + 0.85 * t : 0.8 - 0.8 * t;
  return mix(background, ramp(PLASMA, at), 0.35 + 0.65 * t);
}

/** Parses `rgb(...)` / `rgba(...)` as the browser reports computed colours. */
export function parseColor(value: string, fallback: RGB): RGB {
  const m = /rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)(?:[,\s/]+([\d.]+%?))?/.exec(value);
  if (!m) {
    return fallback;
  }
  if (m[4] !== undefined && parseFloat(m[4]) === 0) {
    return fallback; // transparent
  }
  return [parseFloat(m[1]), parseFloat(m[2]), parseFloat(m[3])];
}

/** Whether a background is dark (for choosing outline colours). */
export function isDark(c: RGB): boolean {
  return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 128;
}

/** Any CSS colour as [r, g, b, a] in 0..1 (what WebGL wants), via a canvas's parser. */
export function toRgba(
  color: string,
  fallback: [number, number, number, number] = [0.3, 0.47, 0.65, 1]
): [number, number, number, number] {
  const ctx = document.createElement('canvas').getContext('2d');
  if (!ctx) {
    return fallback;
  }
  ctx.fillStyle = '#010203';
  ctx.fillStyle = color;
  const value = String(ctx.fillStyle);
  if (value === '#010203' && color.trim().toLowerCase() !== '#010203') {
    return fallback;
  }
  if (value.startsWith('#')) {
    const n = parseInt(value.slice(1, 7), 16);
    return [((n >> 16) & 255) / 255, ((n >> 8) & 255) / 255, (n & 255) / 255, 1];
  }
  const [r, g, b] = parseColor(value, [0, 0, 0]);
  const alpha = /,\s*([\d.]+)\s*\)$/.exec(value);
  return [r / 255, g / 255, b / 255, alpha ? parseFloat(alpha[1]) : 1];
}

/** `color` at opacity `alpha`, as an rgba() string. */
export function withAlpha(color: string, alpha: number): string {
  const [r, g, b, a] = toRgba(color);
  return `rgba(${Math.round(r * 255)}, ${Math.round(g * 255)}, ${Math.round(b * 255)}, ${a * alpha})`;
}

/**
 * The similarity ramp as one CSS colour per score code (0..254 from the lowest score to the
 * highest; 255 and above as 254), faded into `background` at the low end.
 */
export function similarityRamp(background: RGB, levels = 256): string[] {
  return Array.from({ length: levels }, (_, i) => css(similarity(Math.min(i, 254) / 254, background)));
}
