/**
 * The scatter map: regl-scatterplot (WebGL) draws the points, handles pan, zoom, hover and
 * the lasso; a 2-D canvas on top draws what WebGL does not: query hits with their ranks,
 * neighbours, the clicked point, cluster labels and the box being dragged.
 *
 * Points live in regl-scatterplot's normalised space ([-1, 1], aspect ratio kept). The
 * overlay is redrawn on each view change, coalesced into one animation frame; it only
 * touches the few marked points and labels, never all points.
 */

import createScatterplot, { createRenderer } from 'regl-scatterplot';

import { toRgba, withAlpha } from './colors';
import { h } from './dom';
import { Box, place } from './labels';

type Scatterplot = ReturnType<typeof createScatterplot>;
type Rect = { x: number; y: number; width: number; height: number };

/** Points sampled to find the frame, and the share of them left out on each side. */
const FRAME_SAMPLE = 20_000;
const FRAME_OUTSIDE = 0.002;

/**
 * The area (normalised coordinates) the view starts on and resets to: all but the outermost
 * 0.2% of the points on each axis, with a margin. UMAP leaves a few points far from the rest,
 * and framing them would shrink everything else into a corner; zooming out still shows them.
 */
function frame(xs: Float32Array, ys: Float32Array): Rect | null {
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
type Renderer = ReturnType<typeof createRenderer>;

/** Stands in for the 2-D canvas regl-scatterplot's renderer copies each frame onto: no copy. */
const NO_COPY = {
  width: 0,
  height: 0,
  getContext: () => ({ clearRect: () => undefined, drawImage: () => undefined })
} as unknown as HTMLCanvasElement;

/** A map's renderer, and how many points it draws (a cap while the view moves). */
interface PointsRenderer {
  readonly renderer: Renderer;
  /** Most points drawn a frame (Infinity: all); see ScatterMap.move. */
  budget: number;
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
function directRenderer(canvas: HTMLCanvasElement): PointsRenderer {
  const base = createRenderer({ canvas });
  const gl = base.regl._gl;
  const drawArrays = gl.drawArrays.bind(gl);
  let bodies = false;
  const points: PointsRenderer = {
    renderer: Object.create(base, {
      render: {
        value: (draw: () => void) => {
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
 * A fixed random order of `n` points (seeded: the same map looks the same each time).
 * Points are drawn in this order, so any first part of it is an even sample of the map.
 */
function shuffled(n: number): number[] {
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

export type Mode = 'pan' | 'lasso' | 'box';

export interface ScatterEvents {
  /** A point was clicked (not double-clicked). */
  click(index: number): void;
  /** A lasso or box was drawn: the indices inside it. */
  select(indices: number[]): void;
  /** The pointer is over a point (-1: over none); x, y: its position in the map box. */
  hover(index: number, x: number, y: number): void;
  /** The map was drawn (first data, or new colours). */
  drawn(first: boolean): void;
}

/** Points marked on the overlay. */
export interface Marks {
  clicked: number;
  neighbors: readonly number[];
  topk: readonly number[];
  /** Points pointed at from elsewhere (a table row, a heatmap cell). */
  pointed: readonly number[];
}

export interface ClusterLabel {
  label: string;
  x: number;
  y: number;
  size: number;
}

/** Point colours: a code per point and a colour per code. */
export interface Colors {
  codes: Uint8Array;
  palette: readonly string[];
}

/** Pointer travel (px) below which a press is a click, not a box. */
const CLICK_SLOP = 4;
/** A single click waits this long for a second one (a double-click resets the view). */
const DOUBLE_CLICK_MS = 260;
/**
 * Points drawn while the view moves (a drag, the wheel, a lasso being drawn): a random
 * sample, more opaque to keep the map's look; all of them again once it rests for SETTLE_MS.
 * A frame's cost grows with the points drawn: a software rasteriser (no GPU) takes about
 * 0.3 ms per thousand points, and the page waits for it, 70-100 ms a frame at 200,000.
 */
const MOVING_POINTS = 50_000;
const SETTLE_MS = 150;
/** regl-scatterplot's opacity by density: the share of the view the points would fill. */
const DENSITY_FILL = 0.15;
/** Zoom range relative to the whole map (no zooming the data out of sight). */
const MIN_SCALE = 0.5;
const MAX_SCALE = 5000;
const LABEL_FONT = '600 11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const RANK_FONT = '600 10px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

export class ScatterMap {
  readonly element: HTMLDivElement;
  /** Takes the pointer (regl-scatterplot's canvas); never drawn on, the points are under it. */
  private readonly canvas: HTMLCanvasElement;
  /** The points (WebGL), drawn by `points`. */
  private readonly glCanvas: HTMLCanvasElement;
  private readonly points: PointsRenderer;
  private readonly overlay: HTMLCanvasElement;
  private readonly ctx: CanvasRenderingContext2D;
  private readonly hint: HTMLDivElement;
  private readonly events: ScatterEvents;
  private readonly plot: Scatterplot;
  private readonly resizeObserver: ResizeObserver;
  private readonly cleanups: (() => void)[] = [];

  private n = 0;
  private xs = new Float32Array(0);
  private ys = new Float32Array(0);
  /** regl-scatterplot's input rows [x, y, colour code, score code], built once per map. */
  private rows: number[][] = [];
  private spatialIndex: ArrayBuffer | undefined;
  private center: [number, number] = [0, 0];
  private scale = 1;
  private colors: Colors = { codes: new Uint8Array(0), palette: ['#4e79a7'] };
  private scores: Colors | null = null;
  private marks: Marks = { clicked: -1, neighbors: [], topk: [], pointed: [] };
  private clusters: ClusterLabel[] = [];
  private showClusters = true;
  private selected: number[] = [];
  private mode: Mode = 'pan';
  private lassoing = false;
  private quiet = false;
  private active = false;
  private view: ArrayLike<number> = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
  private frame = 0;
  private clickTimer: number | undefined;
  private hintTimer: number | undefined;
  private box: { x0: number; y0: number; x: number; y: number } | null = null;
  private drawing: Promise<void> = Promise.resolve();
  private drawnOnce = false;
  private destroyed = false;
  private home: Rect | null = null;
  /** Points shown (all, or those the legend filter keeps). */
  private shown = 0;
  private moving = false;
  /** A press on the map (pan or lasso) is held: the view moves until it is released. */
  private held = false;
  private settleTimer: number | undefined;
  /** The number of points the shuffled drawing order was set for. */
  private ordered = 0;

  constructor(events: ScatterEvents) {
    this.events = events;
    this.element = h('div', 'jme-map-box');
    this.glCanvas = h('canvas', 'jme-points');
    this.canvas = h('canvas', 'jme-map');
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'Map of the embeddings');
    this.overlay = h('canvas', 'jme-overlay');
    this.hint = h('div', 'jme-wheel-hint', 'Ctrl + scroll to zoom (or click the map first)');
    this.element.append(this.glCanvas, this.canvas, this.overlay, this.hint);
    const ctx = this.overlay.getContext('2d');
    if (!ctx) {
      throw new Error('no 2D canvas context');
    }
    this.ctx = ctx;
    this.points = directRenderer(this.glCanvas);
    this.glCanvas.addEventListener('webglcontextlost', () => {
      if (!this.destroyed) {
        // The browser took the context back (too many WebGL maps on the page).
        this.hint.textContent = 'Too many maps are open: run the cell again to redraw this one';
        this.hint.classList.add('jme-visible');
      }
    });
    this.plot = createScatterplot({
      renderer: this.points.renderer,
      canvas: this.canvas,
      width: 'auto',
      height: 'auto',
      pointSize: 4,
      pointSizeSelected: 2,
      pointOutlineWidth: 2,
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
    this.plot.get('camera').setScaleBounds([MIN_SCALE, MAX_SCALE]);
    this.listen();
    this.resizeObserver = new ResizeObserver(() => {
      // The same size as regl-scatterplot gives its canvas: no scaling between the two.
      const { width, height } = this.canvas.getBoundingClientRect();
      this.points.renderer.resize(Math.max(1, width), Math.max(1, height));
      this.plot.redraw();
      this.requestOverlay();
    });
    this.resizeObserver.observe(this.element);
  }

  /** New map positions (n x 2 float32, any range): fitted into view, colours kept. */
  setPoints(xy: Float32Array): void {
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
    this.center = n ? [(x0 + x1) / 2, (y0 + y1) / 2] : [0, 0];
    this.scale = 1.9 / span;
    this.n = n;
    this.shown = n;
    this.xs = new Float32Array(n);
    this.ys = new Float32Array(n);
    const rows: number[][] = new Array(n);
    for (let i = 0; i < n; i++) {
      const x = (xy[2 * i] - this.center[0]) * this.scale;
      const y = (xy[2 * i + 1] - this.center[1]) * this.scale;
      this.xs[i] = x;
      this.ys[i] = y;
      rows[i] = [x, y, 0, 0];
    }
    this.rows = rows;
    this.home = frame(this.xs, this.ys);
    this.spatialIndex = undefined;
    // Fewer points, bigger dots.
    const size = n < 2_000 ? 10 : n < 20_000 ? 6 : n < 200_000 ? 3 : 2;
    void this.plot.set({ pointSize: size });
    this.fillCodes();
    this.redraw(true);
  }

  /** Colours by a column (codes index into the palette). */
  setColors(colors: Colors): void {
    this.colors = colors;
    this.fillCodes();
    this.redraw(false);
  }

  /** Colours by similarity (score codes index into the ramp), or null for none. */
  setScores(scores: Colors | null): void {
    this.scores = scores;
    this.fillCodes();
    this.redraw(false);
  }

  setMarks(marks: Partial<Marks>): void {
    this.marks = { ...this.marks, ...marks };
    this.requestOverlay();
  }

  setClusters(clusters: ClusterLabel[]): void {
    this.clusters = clusters.map(c => ({
      ...c,
      x: (c.x - this.center[0]) * this.scale,
      y: (c.y - this.center[1]) * this.scale
    }));
    this.requestOverlay();
  }

  setClustersVisible(visible: boolean): void {
    this.showClusters = visible;
    this.requestOverlay();
  }

  /** Outline these points as the selection (no event back). */
  setSelection(indices: readonly number[]): void {
    this.selected = indices.filter(i => i >= 0 && i < this.n);
    if (!this.drawnOnce) {
      return;
    }
    this.quiet = true;
    try {
      if (this.selected.length) {
        this.plot.select(this.selected, { preventEvent: true });
      } else {
        this.plot.deselect({ preventEvent: true });
      }
    } finally {
      this.quiet = false;
    }
  }

  /** Show only these points (null: all). */
  setFilter(indices: number[] | null): void {
    if (!this.drawnOnce) {
      return;
    }
    this.shown = indices ? indices.length : this.n;
    void (indices ? this.plot.filter(indices, { preventEvent: true }) : this.plot.unfilter({ preventEvent: true }));
  }

  setMode(mode: Mode): void {
    this.mode = mode;
    void this.plot.set({ mouseMode: mode === 'lasso' ? 'lasso' : 'panZoom', cameraIsFixed: mode === 'box' });
    this.element.dataset.mode = mode;
  }

  setHeight(px: number): void {
    this.element.style.height = `${Math.max(160, px)}px`;
  }

  resetView(): void {
    void this.goHome();
  }

  /** The view that frames the points, leaving out stray ones (see `frame`). */
  private async goHome(): Promise<void> {
    await this.plot.reset();
    if (this.home) {
      await this.plot.zoomToArea(this.home, { transition: false });
    }
  }

  /** Where point `index` is in the map box (CSS px), from the current view. */
  screenPosition(index: number): [number, number] {
    return this.toScreen(this.xs[index], this.ys[index]);
  }

  destroy(): void {
    this.destroyed = true;
    window.clearTimeout(this.clickTimer);
    window.clearTimeout(this.hintTimer);
    window.clearTimeout(this.settleTimer);
    cancelAnimationFrame(this.frame);
    this.resizeObserver.disconnect();
    for (const cleanup of this.cleanups) {
      cleanup();
    }
    this.plot.destroy();
    // regl leaves the context alive; the browser allows only a few per page.
    const gl = this.points.renderer.regl._gl;
    this.points.renderer.destroy();
    gl.getExtension('WEBGL_lose_context')?.loseContext();
  }

  // Drawing ------------------------------------------------------------------------------

  /** Colour code (z) and score code (w) of every row; ints, drawn as categories. */
  private fillCodes(): void {
    const colorCodes = this.colors.codes.length === this.n ? this.colors.codes : null;
    const scoreCodes = this.scores && this.scores.codes.length === this.n ? this.scores.codes : null;
    for (let i = 0; i < this.n; i++) {
      const row = this.rows[i];
      row[2] = colorCodes ? colorCodes[i] : 0;
      row[3] = scoreCodes ? scoreCodes[i] : 0;
    }
  }

  private redraw(newPoints: boolean): void {
    const byScore = this.scores !== null && this.scores.codes.length === this.n;
    const palette = byScore ? this.scores!.palette : this.colors.palette;
    const rows = this.rows;
    // One draw at a time: regl-scatterplot reads the rows while building its textures.
    this.drawing = this.drawing.then(async () => {
      if (this.destroyed || rows !== this.rows) {
        return;
      }
      const colors = (palette.length ? palette : ['#4e79a7']).map(c => toRgba(c));
      const selected = toRgba(cssVar(this.element, '--jme-selected', '#1f2328'));
      // One active (selected) and one hover colour per palette entry: with fewer,
      // regl-scatterplot draws selected points in their own colour.
      await this.plot.set({
        colorBy: byScore ? 'valueB' : 'valueA',
        pointColor: colors,
        pointColorActive: colors.map(() => selected) as never,
        pointColorHover: colors as never
      });
      await this.plot.draw(rows, {
        zDataType: 'categorical',
        wDataType: 'categorical',
        spatialIndex: newPoints ? undefined : this.spatialIndex,
        preventFilterReset: !newPoints
      });
      if (this.destroyed) {
        return;
      }
      if (newPoints) {
        this.spatialIndex = this.plot.get('spatialIndex');
        // Only maps sampled while moving need the shuffled order; regl-scatterplot keeps it
        // for new points of the same number, and drops it for any other number.
        if (this.n !== this.ordered) {
          this.ordered = this.n > MOVING_POINTS ? this.n : 0;
          if (this.ordered) {
            await this.plot.set({ pointOrder: shuffled(this.n) });
          }
        }
      }
      const first = !this.drawnOnce;
      this.drawnOnce = true;
      if (newPoints) {
        this.setSelection(this.selected);
        await this.goHome();
      }
      this.requestOverlay();
      this.events.drawn(first);
    });
  }

  /**
   * The view moves: draw a sample of the points (MOVING_POINTS) until it rests. `held`:
   * a press on the map starts (true) or ends (false); it rests SETTLE_MS after both.
   */
  private move(held?: boolean): void {
    if (held !== undefined) {
      this.held = held;
    }
    window.clearTimeout(this.settleTimer);
    if (!this.held) {
      this.settleTimer = window.setTimeout(() => this.settle(), SETTLE_MS);
    }
    if (this.moving || this.shown <= MOVING_POINTS) {
      return;
    }
    this.moving = true;
    this.points.budget = MOVING_POINTS;
    void this.plot.set({ opacityByDensityFill: (DENSITY_FILL * this.shown) / MOVING_POINTS });
  }

  /** The view rests: every point again. */
  private settle(): void {
    if (!this.moving || this.destroyed) {
      return;
    }
    this.moving = false;
    this.points.budget = Infinity;
    void this.plot.set({ opacityByDensityFill: DENSITY_FILL });
  }

  private requestOverlay(): void {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.drawOverlay();
      });
    }
  }

  /** Data space ([-1, 1]) to CSS px in the map box, as regl-scatterplot projects points. */
  private toScreen(x: number, y: number): [number, number] {
    const w = this.canvas.clientWidth || 1;
    const hgt = this.canvas.clientHeight || 1;
    const v = this.view;
    const vx = v[0] * x + v[4] * y + v[12];
    const vy = v[1] * x + v[5] * y + v[13];
    const clipX = vx / (w / hgt);
    return [(w * (clipX + 1)) / 2, hgt * (0.5 - vy / 2)];
  }

  /** CSS px in the map box to data space (the inverse of toScreen). */
  private toData(sx: number, sy: number): [number, number] {
    const w = this.canvas.clientWidth || 1;
    const hgt = this.canvas.clientHeight || 1;
    const v = this.view;
    const vx = ((2 * sx) / w - 1) * (w / hgt) - v[12];
    const vy = 1 - (2 * sy) / hgt - v[13];
    const det = v[0] * v[5] - v[4] * v[1] || 1;
    return [(v[5] * vx - v[4] * vy) / det, (v[0] * vy - v[1] * vx) / det];
  }

  private drawOverlay(): void {
    const { ctx, overlay } = this;
    const w = this.canvas.clientWidth;
    const hgt = this.canvas.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    if (overlay.width !== Math.round(w * dpr) || overlay.height !== Math.round(hgt * dpr)) {
      overlay.width = Math.round(w * dpr);
      overlay.height = Math.round(hgt * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    if (!this.n) {
      return;
    }
    const fg = cssVar(this.element, '--jme-fg', '#1f2328');
    const bg = cssVar(this.element, '--jme-bg', '#ffffff');
    const hit = cssVar(this.element, '--jme-hit', '#d81b60');
    const neighbor = cssVar(this.element, '--jme-neighbor', '#00897b');
    const taken: Box[] = [];
    const valid = (i: number): boolean => i >= 0 && i < this.n;

    // Neighbours: diamonds.
    ctx.lineWidth = 2;
    ctx.strokeStyle = neighbor;
    for (const i of this.marks.neighbors.filter(valid)) {
      const [x, y] = this.screenPosition(i);
      ctx.beginPath();
      ctx.moveTo(x, y - 7);
      ctx.lineTo(x + 7, y);
      ctx.lineTo(x, y + 7);
      ctx.lineTo(x - 7, y);
      ctx.closePath();
      ctx.stroke();
    }
    // Query hits: rings with their rank beside them, placed where no other label is.
    ctx.strokeStyle = hit;
    ctx.font = RANK_FONT;
    this.marks.topk.forEach((i, rank) => {
      if (!valid(i)) {
        return;
      }
      const [x, y] = this.screenPosition(i);
      ctx.beginPath();
      ctx.arc(x, y, 7, 0, Math.PI * 2);
      ctx.stroke();
      const text = String(rank + 1);
      const tw = ctx.measureText(text).width + 6;
      const th = 14;
      const spot = place(
        [
          { x: x + 8, y: y - th - 2, w: tw, h: th },
          { x: x - 8 - tw, y: y - th - 2, w: tw, h: th },
          { x: x + 8, y: y + 2, w: tw, h: th },
          { x: x - 8 - tw, y: y + 2, w: tw, h: th }
        ],
        taken,
        w,
        hgt
      );
      if (spot) {
        roundRect(ctx, spot, hit);
        ctx.fillStyle = '#ffffff';
        ctx.textBaseline = 'middle';
        ctx.textAlign = 'center';
        ctx.fillText(text, spot.x + spot.w / 2, spot.y + spot.h / 2 + 0.5);
      }
    });
    // The clicked point: a thick ring and a cross.
    if (valid(this.marks.clicked)) {
      const [x, y] = this.screenPosition(this.marks.clicked);
      ctx.strokeStyle = bg;
      ctx.lineWidth = 5;
      ctx.beginPath();
      ctx.arc(x, y, 9, 0, Math.PI * 2);
      ctx.stroke();
      ctx.strokeStyle = fg;
      ctx.lineWidth = 2.5;
      ctx.stroke();
      ctx.beginPath();
      ctx.moveTo(x - 14, y);
      ctx.lineTo(x - 10, y);
      ctx.moveTo(x + 10, y);
      ctx.lineTo(x + 14, y);
      ctx.moveTo(x, y - 14);
      ctx.lineTo(x, y - 10);
      ctx.moveTo(x, y + 10);
      ctx.lineTo(x, y + 14);
      ctx.stroke();
    }
    // Pointed at from a table or the heatmap.
    ctx.strokeStyle = fg;
    ctx.lineWidth = 2;
    for (const i of this.marks.pointed.filter(valid)) {
      const [x, y] = this.screenPosition(i);
      ctx.beginPath();
      ctx.arc(x, y, 11, 0, Math.PI * 2);
      ctx.stroke();
    }
    // Cluster labels, largest cluster first; a label that would overlap is hidden.
    if (this.showClusters) {
      ctx.font = LABEL_FONT;
      ctx.textBaseline = 'middle';
      ctx.textAlign = 'center';
      for (const cluster of this.clusters) {
        const [x, y] = this.toScreen(cluster.x, cluster.y);
        const tw = ctx.measureText(cluster.label).width + 10;
        const spot = place([{ x: x - tw / 2, y: y - 9, w: tw, h: 18 }], taken, w, hgt);
        if (spot) {
          // Translucent, so that the points under a label still show.
          roundRect(ctx, spot, withAlpha(bg, 0.6), cssVar(this.element, '--jme-border', '#d8dde3'));
          ctx.fillStyle = fg;
          ctx.fillText(cluster.label, x, y + 0.5);
        }
      }
    }
    if (this.box) {
      const b = this.box;
      const accent = cssVar(this.element, '--jme-accent', '#1976d2');
      ctx.strokeStyle = accent;
      ctx.fillStyle = withAlpha(accent, 0.12);
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 3]);
      const box = { x: Math.min(b.x0, b.x), y: Math.min(b.y0, b.y), w: Math.abs(b.x - b.x0), h: Math.abs(b.y - b.y0) };
      ctx.fillRect(box.x, box.y, box.w, box.h);
      ctx.strokeRect(box.x + 0.5, box.y + 0.5, box.w, box.h);
      ctx.setLineDash([]);
    }
  }

  // Events -------------------------------------------------------------------------------

  private listen(): void {
    const plot = this.plot;
    plot.subscribe('view', ({ view }) => {
      this.view = view;
      this.move();
      this.requestOverlay();
    });
    plot.subscribe('lassoStart', () => {
      this.lassoing = true;
    });
    plot.subscribe('select', ({ points }) => {
      if (this.quiet) {
        return;
      }
      if (this.lassoing) {
        this.lassoing = false;
        this.selected = [...points];
        this.events.select([...points]);
        return;
      }
      // A click on a point: regl-scatterplot selects it; we keep the selection as it was
      // and report a click, unless a second click makes it a double-click.
      this.setSelection(this.selected);
      window.clearTimeout(this.clickTimer);
      const index = points[0];
      this.clickTimer = window.setTimeout(() => this.events.click(index), DOUBLE_CLICK_MS);
    });
    plot.subscribe('deselect', () => {
      if (!this.quiet && this.selected.length) {
        this.selected = [];
        this.events.select([]);
      }
    });
    plot.subscribe('pointOver', index => {
      const [x, y] = this.screenPosition(index);
      this.events.hover(index, x, y);
    });
    plot.subscribe('pointOut', () => this.events.hover(-1, 0, 0));

    const on = <K extends keyof HTMLElementEventMap>(
      target: HTMLElement | Window,
      type: K,
      handler: (e: HTMLElementEventMap[K]) => void,
      options?: AddEventListenerOptions
    ): void => {
      target.addEventListener(type, handler as EventListener, options);
      this.cleanups.push(() => target.removeEventListener(type, handler as EventListener, options));
    };
    // The wheel zooms only with Ctrl (or Cmd), or once the map was clicked: otherwise it
    // scrolls the page, as over any other output. Stopped before it reaches the canvas.
    on(
      this.element,
      'wheel',
      e => {
        if (!(e.ctrlKey || e.metaKey || this.active)) {
          e.stopPropagation();
          this.flashHint();
        }
      },
      { capture: true }
    );
    on(this.element, 'mousedown', e => {
      this.active = true;
      if (e.button === 0 && this.mode !== 'box') {
        this.move(true);
      }
      // The notebook must not see presses on the map: it would take a shift-drag for
      // extending the cell selection (and swallow the lasso's pointer moves).
      e.stopPropagation();
    });
    on(this.element, 'mouseleave', () => {
      this.active = false;
    });
    on(this.canvas, 'dblclick', e => {
      e.preventDefault();
      window.clearTimeout(this.clickTimer);
      this.resetView();
    });
    // Box selection: in box mode a drag draws a rectangle (the camera is fixed meanwhile).
    on(
      this.element,
      'mousedown',
      e => {
        if (this.mode !== 'box' || e.button !== 0) {
          return;
        }
        e.stopPropagation();
        const [x, y] = this.local(e);
        this.box = { x0: x, y0: y, x, y };
      },
      { capture: true }
    );
    on(window, 'mousemove', e => {
      if (this.box) {
        [this.box.x, this.box.y] = this.local(e);
        this.requestOverlay();
      }
    });
    on(window, 'mouseup', e => {
      if (this.held) {
        this.move(false);
      }
      const box = this.box;
      if (!box) {
        return;
      }
      this.box = null;
      this.requestOverlay();
      [box.x, box.y] = this.local(e);
      if (Math.abs(box.x - box.x0) < CLICK_SLOP && Math.abs(box.y - box.y0) < CLICK_SLOP) {
        return;
      }
      const [ax, ay] = this.toData(box.x0, box.y0);
      const [bx, by] = this.toData(box.x, box.y);
      const [x0, x1] = [Math.min(ax, bx), Math.max(ax, bx)];
      const [y0, y1] = [Math.min(ay, by), Math.max(ay, by)];
      const inside: number[] = [];
      for (let i = 0; i < this.n; i++) {
        const x = this.xs[i];
        const y = this.ys[i];
        if (x >= x0 && x <= x1 && y >= y0 && y <= y1) {
          inside.push(i);
        }
      }
      this.setSelection(inside);
      this.events.select(inside);
    });
  }

  private local(e: MouseEvent): [number, number] {
    const rect = this.canvas.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  }

  private flashHint(): void {
    this.hint.classList.add('jme-visible');
    window.clearTimeout(this.hintTimer);
    this.hintTimer = window.setTimeout(() => this.hint.classList.remove('jme-visible'), 1200);
  }
}

function roundRect(ctx: CanvasRenderingContext2D, box: Box, fill: string, stroke?: string): void {
  ctx.beginPath();
  ctx.roundRect(box.x, box.y, box.w, box.h, 4);
  ctx.fillStyle = fill;
  ctx.fill();
  if (stroke) {
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 1;
    ctx.stroke();
  }
}

/** A CSS custom property of `el` (as computed), or `fallback`. */
export function cssVar(el: Element, name: string, fallback: string): string {
  return getComputedStyle(el).getPropertyValue(name).trim() || fallback;
}
