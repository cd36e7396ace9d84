/**
 * The scatter map: regl-scatterplot (WebGL) draws the points (renderer.ts) and handles pan,
 * zoom, hover and the lasso (gestures.ts); a 2-D canvas on top draws what WebGL does not
 * (overlay.ts): query hits with their ranks, neighbours, the clicked point, cluster labels
 * and the box being dragged. This class holds the map's state and keeps the three in step.
 *
 * Points live in regl-scatterplot's normalised space ([-1, 1], aspect ratio kept; see
 * geometry.ts).
 */

import { sameBytes } from './buffers';
import { css, dimmed, parseColor } from './colors';
import { cssVar, h } from './dom';
import type { FittedPoints, Rect } from './geometry';
import {
  NO_POINTS,
  fewPointsInside,
  fillCodes,
  fitPoints,
  frame,
  pointSizeFor,
  pointsInside,
  shuffled,
  spatialIndex
} from './geometry';
import { toData, toScreen } from './geometry';
import { GestureEvents, Gestures, Mode } from './gestures';
import { Marks, Overlay } from './overlay';
import type { ClusterLabel, ContourSet } from './protocol';
import type { PointsRenderer, Scatterplot } from './renderer';
import { MOVING_POINTS, MotionSampler, createPlot, directRenderer, setPalette, setScale } from './renderer';

export type { Mode } from './gestures';

export type { Marks } from './overlay';

export interface ScatterEvents extends GestureEvents {
  /** The map was drawn (first data, or new colours). */
  drawn(first: boolean): void;
  /** The view moved or was resized: what lies on the map must follow. */
  viewChanged?(): void;
}

/** Point colours: a code per point and a colour per code. */
export interface Colors {
  codes: Uint8Array;
  palette: readonly string[];
}

/** A numeric column's codes (one per point) and what they scale: size, opacity or both. */
export interface Scale {
  codes: Uint8Array;
  size: boolean;
  opacity: boolean;
}

export class ScatterMap {
  readonly element: HTMLDivElement;
  /** Takes the pointer (regl-scatterplot's canvas); never drawn on, the points are under it. */
  private readonly canvas: HTMLCanvasElement;
  /** The points (WebGL), drawn by `points`. */
  private readonly glCanvas: HTMLCanvasElement;
  private readonly points: PointsRenderer;
  private readonly motion: MotionSampler;
  private readonly overlay: Overlay;
  private readonly gestures: Gestures;
  private readonly hint: HTMLDivElement;
  private readonly events: ScatterEvents;
  private readonly plot: Scatterplot;
  private readonly resizeObserver: ResizeObserver;

  /** The points in regl-scatterplot's space, and its input rows (built once per map). */
  private fit: FittedPoints = NO_POINTS;
  private spatialIndex: ArrayBuffer | undefined;
  private colors: Colors = { codes: new Uint8Array(0), palette: ['#4e79a7'] };
  private scores: Colors | null = null;
  /** The codes of the column that scales the points, and what it scales (null: none). */
  private scale: Scale | null = null;
  private marks: Marks = { clicked: -1, neighbors: [], topk: [], pointed: [] };
  private clusters: ClusterLabel[] = [];
  /** Density lines in regl-scatterplot's space. */
  private contours: ContourSet[] = [];
  private showClusters = true;
  private selected: number[] = [];
  private mode: Mode = 'pan';
  private quiet = false;
  private view: ArrayLike<number> = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
  private drawing: Promise<void> = Promise.resolve();
  private drawnOnce = false;
  /** A draw is queued; new points came since the last draw. */
  private drawQueued = false;
  private newPoints = false;
  private destroyed = false;
  private home: Rect | null = null;
  /** The user moved the view (drag or wheel) since it was last fitted: resizes keep it. */
  private moved = false;
  /** The view's scale when fitted (the zoom of cluster labels is relative to it). */
  private homeScale = 1;
  /** Points shown by the legend's filter (null: all), and points greyed out by the filter. */
  private shownOnly: number[] | null = null;
  private dimmed: Uint8Array | null = null;
  /** Points the legend hides, for the labels (null: none). */
  private hidden: Uint8Array | null = null;
  /** The number of points the shuffled drawing order was set for. */
  private ordered = 0;

  constructor(events: ScatterEvents) {
    this.events = events;
    this.element = h('div', 'jme-map-box');
    this.glCanvas = h('canvas', 'jme-points');
    this.canvas = h('canvas', 'jme-map');
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'Map of the embeddings');
    this.overlay = new Overlay({
      element: this.element,
      size: () => [this.canvas.clientWidth, this.canvas.clientHeight],
      toScreen: (x, y) => this.toScreen(x, y),
      position: index => this.screenPosition(index),
      scene: () => ({
        n: this.fit.n,
        marks: this.marks,
        clusters: this.clusters,
        contours: this.contours,
        showClusters: this.showClusters,
        zoom: Math.abs(this.view[0]) / this.homeScale,
        hidden: this.hidden,
        box: this.gestures.box
      })
    });
    this.hint = h('div', 'jme-wheel-hint', 'Ctrl + scroll to zoom (or click the map first)');
    this.element.append(this.glCanvas, this.canvas, this.overlay.canvas, this.hint);
    this.points = directRenderer(this.glCanvas);
    this.glCanvas.addEventListener('webglcontextlost', () => {
      if (!this.destroyed) {
        // The browser took the context back (too many WebGL maps on the page).
        this.hint.textContent = 'Too many maps are open: run the cell again to redraw this one';
        this.hint.classList.add('jme-visible');
      }
    });
    this.plot = createPlot(this.points, this.canvas);
    this.motion = new MotionSampler(this.points, fill => void this.plot.set({ opacityByDensityFill: fill }));
    this.gestures = new Gestures({
      element: this.element,
      canvas: this.canvas,
      hint: this.hint,
      plot: this.plot,
      motion: this.motion,
      events,
      mode: () => this.mode,
      quiet: () => this.quiet,
      selection: () => this.selected,
      keepSelection: indices => {
        this.selected = indices;
      },
      setSelection: indices => this.setSelection(indices),
      viewChanged: (view, byUser) => {
        this.view = view;
        this.moved ||= byUser;
        this.motion.move();
        this.overlay.request();
        events.viewChanged?.();
      },
      pointsInside: (a, b) => pointsInside(this.fit.xs, this.fit.ys, this.toData(...a), this.toData(...b)),
      position: index => this.screenPosition(index),
      redrawOverlay: () => this.overlay.request(),
      resetView: () => this.resetView()
    });
    this.resizeObserver = new ResizeObserver(() => {
      // The same size as regl-scatterplot gives its canvas: no scaling between the two.
      const { width, height } = this.canvas.getBoundingClientRect();
      if (!width || !height) {
        return; // hidden (a collapsed output, a cell outside the notebook's window)
      }
      this.points.renderer.resize(width, height);
      this.plot.redraw();
      if (this.drawnOnce && !this.moved) {
        this.fitView(); // a view fitted to another size (or to none) would crop or shrink
      }
      this.overlay.request();
      events.viewChanged?.();
    });
    this.resizeObserver.observe(this.element);
  }

  /** New map positions (n x 2 float32, any range): fitted into view, colours kept. */
  setPoints(xy: Float32Array): void {
    const fitted = fitPoints(xy);
    this.fit = fitted;
    this.motion.shown = fitted.n;
    this.home = frame(fitted.xs, fitted.ys);
    this.spatialIndex = undefined;
    // Codes of another number of points no longer apply (the views set them again).
    this.scale = this.scale?.codes.length === fitted.n ? this.scale : null;
    this.dimmed = this.dimmed?.length === fitted.n ? this.dimmed : null;
    this.redraw(true);
  }

  /** Colours by a column (codes index into the palette). */
  setColors(colors: Colors): void {
    this.colors = colors;
    this.redraw(false);
  }

  /** Colours by similarity (score codes index into the ramp), or null for none. */
  setScores(scores: Colors | null): void {
    this.scores = scores;
    this.redraw(false);
  }

  setMarks(marks: Partial<Marks>): void {
    this.marks = { ...this.marks, ...marks };
    this.overlay.request();
  }

  setClusters(clusters: ClusterLabel[]): void {
    this.clusters = clusters.map(c => ({
      ...c,
      x: (c.x - this.fit.center[0]) * this.fit.scale,
      y: (c.y - this.fit.center[1]) * this.fit.scale
    }));
    this.overlay.request();
  }

  /** Density lines (data coordinates, as the points came). */
  setContours(contours: readonly ContourSet[]): void {
    const [cx, cy] = this.fit.center;
    const scale = this.fit.scale;
    this.contours = contours.map(set => ({
      ...set,
      paths: set.paths.map(path => path.map((v, i) => (v - (i % 2 ? cy : cx)) * scale))
    }));
    this.overlay.request();
  }

  setClustersVisible(visible: boolean): void {
    this.showClusters = visible;
    this.overlay.request();
  }

  /** Outline these points as the selection (no event back). */
  setSelection(indices: readonly number[]): void {
    this.selected = indices.filter(i => i >= 0 && i < this.fit.n);
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
    this.shownOnly = indices;
    this.updateHidden();
    if (!this.drawnOnce) {
      return;
    }
    this.motion.shown = indices ? indices.length : this.fit.n;
    void (indices ? this.plot.filter(indices, { preventEvent: true }) : this.plot.unfilter({ preventEvent: true }));
  }

  /** Sizes and/or opacity by a column (n codes, see geometry.sizeScale and opacityScale),
   * or null for one size and opacity by density. */
  setScale(scale: Scale | null): void {
    const next = scale && scale.codes.length === this.fit.n ? scale : null;
    const now = this.scale;
    if (
      next === now ||
      (next && now && sameBytes(next.codes, now.codes) && next.size === now.size && next.opacity === now.opacity)
    ) {
      return; // no change: no redraw (a million points take a while)
    }
    this.scale = next;
    this.redraw(false);
  }

  /** Grey out the points whose byte is 0 (the filter's non-matches); null: none. */
  setDimmed(matches: Uint8Array | null): void {
    if (!matches && !this.dimmed) {
      return; // no filter before or after: no redraw
    }
    this.dimmed = matches && matches.length === this.fit.n ? matches.map(m => (m ? 0 : 1)) : null;
    this.redraw(false);
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
    this.fitView();
  }

  /** The points in view, or null when there are more than `limit` (or none drawn yet). */
  pointsInView(limit: number): number[] | null {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!this.drawnOnce || !width || !height) {
      return null;
    }
    return fewPointsInside(this.fit.xs, this.fit.ys, this.toData(0, 0), this.toData(width, height), limit);
  }

  /** Where point `index` is in the map box (CSS px), from the current view. */
  screenPosition(index: number): [number, number] {
    return this.toScreen(this.fit.xs[index], this.fit.ys[index]);
  }

  destroy(): void {
    this.destroyed = true;
    this.gestures.destroy();
    this.motion.stop();
    this.overlay.destroy();
    this.resizeObserver.disconnect();
    this.plot.destroy();
    // regl leaves the context alive; the browser allows only a few per page.
    const gl = this.points.renderer.regl._gl;
    this.points.renderer.destroy();
    gl.getExtension('WEBGL_lose_context')?.loseContext();
  }

  /** Fits the view to the points, after any draw under way. */
  private fitView(): void {
    this.drawing = this.drawing.then(() => (this.destroyed ? undefined : this.goHome()));
  }

  /** The view that frames the points, leaving out stray ones (see geometry.frame). */
  private async goHome(): Promise<void> {
    this.moved = false;
    await this.plot.reset();
    if (this.home && !this.destroyed) {
      await this.plot.zoomToArea(this.home, { transition: false });
    }
    if (this.destroyed) {
      return; // the view went (its output cleared, the cell run again) while the camera moved
    }
    this.homeScale = Math.abs(this.plot.get('cameraView')[0]) || 1;
    this.overlay.request();
  }

  /** Data space ([-1, 1]) to CSS px in the map box, as regl-scatterplot projects points. */
  private toScreen(x: number, y: number): [number, number] {
    return toScreen(this.view, this.canvas.clientWidth || 1, this.canvas.clientHeight || 1, x, y);
  }

  /** CSS px in the map box to data space (the inverse of toScreen). */
  private toData(sx: number, sy: number): [number, number] {
    return toData(this.view, this.canvas.clientWidth || 1, this.canvas.clientHeight || 1, sx, sy);
  }

  /** The colouring shown: the query's scores when they colour the map, else the column's. */
  private shown(): Colors {
    return this.scores !== null && this.scores.codes.length === this.fit.n ? this.scores : this.colors;
  }

  /** Colour code (z) and size code (w) of every row; ints, drawn as categories. A greyed
   * out point takes the code after the palette's last (see redraw). */
  private fillCodes(): void {
    const shown = this.shown();
    fillCodes(
      this.fit.rows,
      shown.codes.length === this.fit.n ? shown.codes : null,
      this.scale?.codes ?? null,
      this.dimmed && { mask: this.dimmed, code: shown.palette.length }
    );
  }

  /** The points the legend hides, for the labels (greyed out points still show theirs). */
  private updateHidden(): void {
    const { shownOnly } = this;
    let hidden: Uint8Array | null = null;
    if (shownOnly) {
      hidden = new Uint8Array(this.fit.n).fill(1);
      for (const i of shownOnly) {
        hidden[i] = 0;
      }
    }
    this.hidden = hidden;
    this.overlay.request();
  }

  /**
   * Draws once whatever changed since the last draw: setters called in one go (new points,
   * colours, sizes, the filter) make one draw, not one each (a million points take about a
   * second). One draw at a time: regl-scatterplot reads the rows while building its textures.
   */
  private redraw(newPoints: boolean): void {
    this.newPoints ||= newPoints;
    if (this.drawQueued) {
      return;
    }
    this.drawQueued = true;
    this.drawing = this.drawing.then(async () => {
      this.drawQueued = false;
      const fresh = this.newPoints;
      this.newPoints = false;
      if (this.destroyed) {
        return;
      }
      // The codes once a draw, for every setter that asked for it.
      this.fillCodes();
      const base = this.shown().palette;
      const sized = Boolean(this.scale?.size);
      const faded = Boolean(this.scale?.opacity);
      const background = parseColor(cssVar(this.element, '--jme-bg', '#ffffff'), [255, 255, 255]);
      const palette = this.dimmed ? [...base, css(dimmed(background))] : base;
      const rows = this.fit.rows;
      await setPalette(this.plot, palette, cssVar(this.element, '--jme-selected', '#1f2328'));
      await setScale(this.plot, pointSizeFor(this.fit.n), sized, faded);
      if (this.destroyed) {
        return;
      }
      this.element.dataset.sized = String(sized); // hooks for tests
      this.element.dataset.faded = String(faded);
      if (fresh) {
        this.spatialIndex = spatialIndex(this.fit.xs, this.fit.ys);
      }
      await this.plot.draw(rows, {
        zDataType: 'categorical',
        wDataType: 'categorical',
        spatialIndex: this.spatialIndex,
        preventFilterReset: !fresh
      });
      if (this.destroyed) {
        return;
      }
      if (fresh) {
        // Only maps sampled while moving need the shuffled order; regl-scatterplot keeps it
        // for new points of the same number, and drops it for any other number.
        if (this.fit.n !== this.ordered) {
          this.ordered = this.fit.n > MOVING_POINTS ? this.fit.n : 0;
          if (this.ordered) {
            await this.plot.set({ pointOrder: shuffled(this.fit.n) });
          }
        }
      }
      const first = !this.drawnOnce;
      this.drawnOnce = true;
      if (fresh) {
        this.setSelection(this.selected);
        await this.goHome();
      }
      this.overlay.request();
      this.events.drawn(first);
      this.events.viewChanged?.();
    });
  }
}
