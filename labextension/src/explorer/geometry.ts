/**
 * Pure maths of the scatter map: fitting the points into regl-scatterplot's normalised space,
 * the frame the view starts on, the drawing order, and projecting between data space and the
 * map box with regl-scatterplot's view matrix. No DOM: unit-tested in node.
 */

import KDBush from 'kdbush';

export type Rect = { x: number; y: number; width: number; height: number };

/** Points sampled to find the frame, and the share of them left out on each side. */
const FRAME_SAMPLE = 20_000;
const FRAME_OUTSIDE = 0.002;

/** Points fitted into [-1, 1] (aspect ratio kept), and how: data = xy * scale + center. */
export interface FittedPoints {
  n: number;
  center: [number, number];
  scale: number;
  xs: Float32Array;
  ys: Float32Array;
  /** regl-scatterplot's input rows [x, y, colour code, score code] (codes 0). */
  rows: number[][];
}

/** No points yet (never changed: `fitPoints` makes new ones). */
export const NO_POINTS: FittedPoints = {
  n: 0,
  center: [0, 0],
  scale: 1,
  xs: new Float32Array(0),
  ys: new Float32Array(0),
  rows: []
};

/** Fits n x 2 positions (any range) into regl-scatterplot's normalised space. */
export function fitPoints(xy: Float32Array): FittedPoints {
  const n = Math.floor(xy.length / 2);
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = xy[2 * i];
    const y = xy[2 * i + 1];
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  const span = Math.max(x1 - x0, y1 - y0) || 1;
  const center: [number, number] = n ? [(x0 + x1) / 2, (y0 + y1) / 2] : [0, 0];
  const scale = 1.9 / span;
  const xs = new Float32Array(n);
  const ys = new Float32Array(n);
  const rows: number[][] = new Array(n);
  for (let i = 0; i < n; i++) {
    const x = (xy[2 * i] - center[0]) * scale;
    const y = (xy[2 * i + 1] - center[1]) * scale;
    xs[i] = x;
    ys[i] = y;
    rows[i] = [x, y, 0, 0];
  }
  return { n, center, scale, xs, ys, rows };
}

/**
 * The points' spatial index in regl-scatterplot's format (kdbush's, its node size), built
 * from the typed coordinates. Given to its `draw`, it is not built there: from a million
 * points up regl-scatterplot copies its rows to a worker to build it and draws nothing until
 * the index comes back (about a second at a million points).
 */
export function spatialIndex(xs: Float32Array, ys: Float32Array): ArrayBuffer {
  const index = new KDBush(xs.length, 16, Float32Array);
  for (let i = 0; i < xs.length; i++) {
    index.add(xs[i], ys[i]);
  }
  index.finish();
  return index.data as ArrayBuffer;
}

/**
 * Writes each point's colour code (z: of the colouring shown, a column's or the query's
 * scores) and size code (w) into its row (0 without codes); regl-scatterplot draws both as
 * categories. A greyed out point (`dimmed`) takes the dimmed colour code.
 */
export function fillCodes(
  rows: number[][],
  colorCodes: Uint8Array | null,
  scaleCodes: Uint8Array | null,
  dimmed: Dimmed | null = null
): void {
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    row[2] = dimmed && dimmed.mask[i] ? dimmed.code : colorCodes ? colorCodes[i] : 0;
    row[3] = scaleCodes ? scaleCodes[i] : 0;
  }
}

/** Points greyed out (mask byte 1) and the colour code they take instead of theirs. */
export interface Dimmed {
  mask: Uint8Array;
  code: number;
}

/** Sizes by code (0..254 from the smallest value to the largest, 255 missing): from half to
 * two and a half times `base`, missing values smallest. */
export function sizeScale(base: number): number[] {
  return Array.from({ length: 256 }, (_, code) => base * (code === 255 ? 0.5 : 0.5 + (2 * code) / 254));
}

/** Opacity by code (0..254 from the smallest value to the largest, 255 missing): from 0.15
 * to 1, missing values faintest. */
export function opacityScale(): number[] {
  return Array.from({ length: 256 }, (_, code) => (code === 255 ? 0.15 : 0.15 + (0.85 * code) / 254));
}

/** The point size for a map of n points: fewer points, bigger dots. */
export function pointSizeFor(n: number): number {
  return n < 2_000 ? 10 : n < 20_000 ? 6 : n < 200_000 ? 3 : 2;
}

/**
 * The area (normalised coordinates) the view starts on and resets to: all but the outermost
 * 0.2% of the points on each axis, with a margin. UMAP leaves a few points far from the rest,
 * and framing them would shrink everything else into a corner; zooming out still shows them.
 */
export function frame(xs: Float32Array, ys: Float32Array): Rect | null {
  const n = xs.length;
  if (n < 1_000) {
    return null; // small maps: every point, regl-scatterplot's own fit
  }
  const step = Math.max(1, Math.floor(n / FRAME_SAMPLE));
  const sx: number[] = [];
  const sy: number[] = [];
  for (let i = 0; i < n; i += step) {
    sx.push(xs[i]);
    sy.push(ys[i]);
  }
  const cut = (values: number[]): [number, number] => {
    values.sort((a, b) => a - b);
    const k = Math.floor(values.length * FRAME_OUTSIDE);
    return [values[k], values[values.length - 1 - k]];
  };
  const [x0, x1] = cut(sx);
  const [y0, y1] = cut(sy);
  const margin = 0.05 * Math.max(x1 - x0, y1 - y0, 1e-6);
  return { x: x0 - margin, y: y0 - margin, width: x1 - x0 + 2 * margin, height: y1 - y0 + 2 * margin };
}

/**
 * A fixed random order of `n` points (seeded: the same map looks the same each time).
 * Points are drawn in this order, so any first part of it is an even sample of the map.
 */
export function shuffled(n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let state = 0x9e3779b9;
  for (let i = n - 1; i > 0; i--) {
    // xorshift32
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    const j = (state >>> 0) % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/**
 * Data space ([-1, 1]) to CSS px in a `width` x `height` map box, as regl-scatterplot
 * projects points with its 4 x 4 view matrix `view`.
 */
export function toScreen(
  view: ArrayLike<number>,
  width: number,
  height: number,
  x: number,
  y: number
): [number, number] {
  const v = view;
  const vx = v[0] * x + v[4] * y + v[12];
  const vy = v[1] * x + v[5] * y + v[13];
  const clipX = vx / (width / height);
  return [(width * (clipX + 1)) / 2, height * (0.5 - vy / 2)];
}

/** CSS px in the map box to data space (the inverse of toScreen). */
export function toData(
  view: ArrayLike<number>,
  width: number,
  height: number,
  sx: number,
  sy: number
): [number, number] {
  const v = view;
  const vx = ((2 * sx) / width - 1) * (width / height) - v[12];
  const vy = 1 - (2 * sy) / height - v[13];
  const det = v[0] * v[5] - v[4] * v[1] || 1;
  return [(v[5] * vx - v[4] * vy) / det, (v[0] * vy - v[1] * vx) / det];
}

/** The points whose (xs[i], ys[i]) lie in the rectangle spanned by two corners (any order). */
export function pointsInside(xs: Float32Array, ys: Float32Array, a: [number, number], b: [number, number]): number[] {
  return fewPointsInside(xs, ys, a, b, Infinity)!;
}

/**
 * The points inside the rectangle spanned by two corners, as `pointsInside` gives them, or
 * null as soon as there are more than `limit` (a view too wide to show each point's picture).
 */
export function fewPointsInside(
  xs: Float32Array,
  ys: Float32Array,
  a: [number, number],
  b: [number, number],
  limit: number
): number[] | null {
  const [x0, x1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
  const [y0, y1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
  const inside: number[] = [];
  const n = Math.min(xs.length, ys.length);
  for (let i = 0; i < n; i++) {
    const x = xs[i];
    const y = ys[i];
    if (x >= x0 && x <= x1 && y >= y0 && y <= y1) {
      if (inside.length === limit) {
        return null;
      }
      inside.push(i);
    }
  }
  return inside;
}
