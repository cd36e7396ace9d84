/**
 * How the map's points reach the screen: a regl-scatterplot renderer drawing straight into
 * the map's WebGL canvas, and the sampling that keeps a moving view responsive (a random
 * sample of the points is drawn while the view moves, all of them once it rests).
 */

import createScatterplot, { createRenderer } from 'regl-scatterplot';

import { toRgba } from './colors';
import { opacityScale, sizeScale } from './geometry';

type Renderer = ReturnType<typeof createRenderer>;
export type Scatterplot = ReturnType<typeof createScatterplot>;

/**
 * Points drawn while the view moves (a drag, the wheel, a lasso being drawn): a random
 * sample, more opaque to keep the map's look; all of them again once it rests for SETTLE_MS.
 * A frame's cost grows with the points drawn: a software rasteriser (no GPU) takes about
 * 0.3 ms per thousand points, and the page waits for it, 70-100 ms a frame at 200,000.
 */
export const MOVING_POINTS = 50_000;
const SETTLE_MS = 150;
/**
 * The sample adapts to the machine: while the view moves, frames slower than SLOW_FRAME_MS
 * draw fewer points next time (down to MIN_MOVING_POINTS), faster than FAST_FRAME_MS more (up
 * to MOVING_POINTS). Intervals over GAP_MS are pauses of the pointer, not frames.
 */
const SLOW_FRAME_MS = 45;
const FAST_FRAME_MS = 25;
const GAP_MS = 250;
const MIN_MOVING_POINTS = 10_000;
/** regl-scatterplot's opacity by density: the share of the view the points would fill. */
export const DENSITY_FILL = 0.15;

/** Zoom range relative to the whole map (no zooming the data out of sight). */
const MIN_SCALE = 0.5;
const MAX_SCALE = 5000;

/** Stands in for the 2-D canvas regl-scatterplot's renderer copies each frame onto: no copy. */
const NO_COPY = {
  width: 0,
  height: 0,
  getContext: () => ({ clearRect: () => undefined, drawImage: () => undefined })
} as unknown as HTMLCanvasElement;

/** A map's renderer, and how many points it draws (a cap while the view moves). */
export interface PointsRenderer {
  readonly renderer: Renderer;
  /** Most points drawn a frame (Infinity: all); see MotionSampler. */
  budget: number;
  /** Called at each frame drawn, with the time since the one before (ms). */
  onFrame?: (interval: number) => void;
}

/**
 * A renderer drawing into `canvas`, shown as the map itself. regl-scatterplot's renderer
 * draws into its own (offscreen) canvas and copies every frame onto the map's 2-D canvas
 * with `drawImage`, a read-back that makes the main thread wait until the GPU (software
 * WebGL: the rasteriser) has drawn every point; without it the browser composites the
 * WebGL canvas itself. One WebGL context a map (released by `ScatterMap.destroy`).
 *
 * `budget` caps the point bodies, the first points regl-scatterplot draws in a frame (the
 * hovered and selected points come after them and are drawn in full).
 */
export function directRenderer(canvas: HTMLCanvasElement): PointsRenderer {
  const base = createRenderer({ canvas });
  const gl = base.regl._gl;
  const drawArrays = gl.drawArrays.bind(gl);
  let bodies = false;
  let last = 0;
  const points: PointsRenderer = {
    renderer: Object.create(base, {
      render: {
        value: (draw: () => void) => {
          const now = performance.now();
          points.onFrame?.(now - last);
          last = now;
          bodies = true;
          base.render(draw, NO_COPY);
          bodies = false;
        }
      }
    }) as Renderer,
    budget: Infinity
  };
  gl.drawArrays = (mode: GLenum, first: GLint, count: GLsizei): void => {
    if (bodies && mode === gl.POINTS) {
      bodies = false;
      count = Math.min(count, points.budget);
    }
    drawArrays(mode, first, count);
  };
  return points;
}

/**
 * The map's regl-scatterplot, drawing with `points` and taking the pointer on `canvas`:
 * opacity by density, shift-drag lassoes, a click selects a point (see gestures.ts).
 */
export function createPlot(points: PointsRenderer, canvas: HTMLCanvasElement): Scatterplot {
  const plot = createScatterplot({
    renderer: points.renderer,
    canvas,
    width: 'auto',
    height: 'auto',
    pointSize: 4,
    pointSizeSelected: 1,
    pointOutlineWidth: 1,
    opacityBy: 'density' as never,
    opacityByDensityFill: DENSITY_FILL,
    lassoMinDelay: 10,
    lassoMinDist: 2,
    lassoClearEvent: 'lassoEnd',
    deselectOnDblClick: false,
    deselectOnEscape: true,
    backgroundColor: [0, 0, 0, 0],
    // Shift-drag lassoes, Cmd/Meta adds to the selection, Alt removes; no rotation.
    ...({ actionKeyMap: { lasso: 'shift', merge: 'meta', remove: 'alt' } } as object)
  });
  plot.get('camera').setScaleBounds([MIN_SCALE, MAX_SCALE]);
  return plot;
}

/**
 * Colours the points by `palette`, indexed by their colour codes (valueA). A selected point
 * keeps its hue, half-way to `selected` (CSS colours), as a ring around a dot: a selection
 * never hides the colouring or the labels.
 */
export async function setPalette(plot: Scatterplot, palette: readonly string[], selected: string): Promise<void> {
  const colors = (palette.length ? palette : ['#4e79a7']).map(c => toRgba(c));
  const mark = toRgba(selected);
  // One active (selected) and one hover colour per palette entry: with fewer,
  // regl-scatterplot draws selected points in their own colour.
  await plot.set({
    colorBy: 'valueA',
    pointColor: colors,
    pointColorActive: colors.map(c => c.map((v, i) => (i < 3 ? (v + mark[i]) / 2 : 1))) as never,
    pointColorHover: colors as never
  });
}

/**
 * Point sizes and opacity: `base` for all and opacity by density, or by their scale codes
 * (valueB) on `sizeScale(base)` and `opacityScale()`.
 */
export async function setScale(plot: Scatterplot, base: number, bySize: boolean, byOpacity: boolean): Promise<void> {
  await plot.set({
    sizeBy: bySize ? 'valueB' : null,
    pointSize: bySize ? sizeScale(base) : base,
    opacityBy: byOpacity ? 'valueB' : 'density',
    opacity: byOpacity ? opacityScale() : 1
  } as never);
}

/** Draws a sample of the points (MOVING_POINTS) while the view moves, all once it rests. */
export class MotionSampler {
  /** Points shown (all, or those the legend filter keeps). */
  shown = 0;
  private readonly points: PointsRenderer;
  /** Sets regl-scatterplot's `opacityByDensityFill`. */
  private readonly setDensityFill: (fill: number) => void;
  private moving = false;
  /** A press on the map (pan or lasso) is held: the view moves until it is released. */
  private pressed = false;
  private settleTimer: number | undefined;
  private stopped = false;

  /** Points drawn a frame while moving: MOVING_POINTS at first, then what this machine
   * draws in time (see SLOW_FRAME_MS). */
  private sample = MOVING_POINTS;

  constructor(points: PointsRenderer, setDensityFill: (fill: number) => void) {
    this.points = points;
    this.setDensityFill = setDensityFill;
    points.onFrame = interval => this.adapt(interval);
  }

  /** Whether a press on the map is held. */
  get held(): boolean {
    return this.pressed;
  }

  /**
   * The view moves: draw a sample of the points (MOVING_POINTS) until it rests. `held`:
   * a press on the map starts (true) or ends (false); it rests SETTLE_MS after both.
   */
  move(held?: boolean): void {
    if (held !== undefined) {
      this.pressed = held;
    }
    window.clearTimeout(this.settleTimer);
    if (!this.pressed) {
      this.settleTimer = window.setTimeout(() => this.settle(), SETTLE_MS);
    }
    if (this.moving || this.shown <= MOVING_POINTS) {
      return;
    }
    this.moving = true;
    this.useSample();
  }

  /** A frame was drawn `interval` ms after the one before: fit the sample to the machine. */
  private adapt(interval: number): void {
    if (!this.moving || interval > GAP_MS) {
      return;
    }
    const before = this.sample;
    if (interval > SLOW_FRAME_MS) {
      this.sample = Math.max(MIN_MOVING_POINTS, Math.round(this.sample * 0.75));
    } else if (interval < FAST_FRAME_MS) {
      this.sample = Math.min(MOVING_POINTS, Math.round(this.sample * 1.1));
    }
    if (this.sample !== before) {
      this.useSample();
    }
  }

  private useSample(): void {
    const drawn = Math.min(this.sample, this.shown);
    this.points.budget = drawn;
    this.setDensityFill((DENSITY_FILL * this.shown) / drawn);
  }

  /** No more settling (the map is destroyed). */
  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.settleTimer);
  }

  /** The view rests: every point again. */
  private settle(): void {
    if (!this.moving || this.stopped) {
      return;
    }
    this.moving = false;
    this.points.budget = Infinity;
    this.setDensityFill(DENSITY_FILL);
  }
}
