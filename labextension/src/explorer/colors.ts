/** Colour scales of the explorer: label palette, similarity ramp, heatmap ramp. */

export type RGB = [number, number, number];

/** Tableau 10: distinct on light and dark backgrounds. */
const CATEGORICAL: readonly string[] = [
  '#4e79a7',
  '#f28e2b',
  '#e15759',
  '#76b7b2',
  '#59a14f',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac'
];

/** Colour of label `code`; past the palette, hues spaced by the golden angle. */
export function categorical(code: number): string {
  if (code < CATEGORICAL.length) {
    return CATEGORICAL[code];
  }
  const hue = Math.round((code * 137.508) % 360);
  return `hsl(${hue}, 55%, 55%)`;
}

/** Colour of points when there are no labels. */
export const DEFAULT_POINT = '#4e79a7';

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

export function css(c: RGB): string {
  return `rgb(${Math.round(c[0])}, ${Math.round(c[1])}, ${Math.round(c[2])})`;
}

/**
 * Similarity colour for `t` in [0, 1]: plasma, faded towards the background at the low end
 * so that the best matches stand out in either theme.
 */
export function similarity(t: number, background: RGB): RGB {
  // Plasma's darkest end vanishes on dark backgrounds: start at 15 %.
  return mix(background, ramp(PLASMA, 0.15 + 0.85 * t), 0.35 + 0.65 * t);
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
