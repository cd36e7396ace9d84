/**
 * The scatter map: one <canvas>, no per-point DOM.
 *
 * Points are grouped by colour once per data or colour change (a counting sort), so a frame
 * is one path and one fill per colour; frames are coalesced with requestAnimationFrame.
 * Hover and click use a uniform grid over the data, so they never scan every point.
 */

import { DEFAULT_POINT, RGB, isDark, parseColor } from './colors';
import { h, placeTooltip, score, shorten } from './dom';

const TAU = Math.PI * 2;
const PADDING = 18;
const MIN_ZOOM = 0.25;
const MAX_ZOOM = 1000;
/** Selections up to this size get outlined points (more would merge into blobs). */
const OUTLINE_LIMIT = 400;
/** Pointer travel (px) below which a press is a click, not a drag. */
const CLICK_SLOP = 4;

export type Mode = 'pan' | 'select';

export interface MapEvents {
  /** A point was clicked (-1: empty space). */
  click(index: number): void;
  /** A box was drawn: the indices inside it. */
  select(indices: number[]): void;
}

/** What the tooltip says about a point. */
export interface PointInfo {
  text: string;
  label?: string;
  color?: string;
  score?: number;
}

/** Points drawn with rings on top of the others. */
export interface Emphasis {
  clicked: number;
  neighbors: readonly number[];
  topk: readonly number[];
  /** Points pointed at from elsewhere (a table row, a heatmap cell). */
  pointed: readonly number[];
}

interface Drag {
  kind: 'pan' | 'box';
  x0: number;
  y0: number;
  x: number;
  y: number;
  moved: boolean;
}

export class ScatterMap {
  readonly element: HTMLDivElement;
  readonly canvas: HTMLCanvasElement;
  /** Tooltip contents for a point; set by the owner. */
  describe: (index: number) => PointInfo = () => ({ text: '' });

  private readonly ctx: CanvasRenderingContext2D;
  private readonly tip: HTMLDivElement;
  private readonly events: MapEvents;
  private readonly resizeObserver: ResizeObserver;

  private n = 0;
  private xs = new Float32Array(0);
  private ys = new Float32Array(0);
  private sx = new Float32Array(0);
  private sy = new Float32Array(0);
  private x0 = 0;
  private x1 = 1;
  private y0 = 0;
  private y1 = 1;

  private palette: string[] = [DEFAULT_POINT];
  /** Point indices grouped by colour, groups in drawing order. */
  private order = new Uint32Array(0);
  /** Group g is order[starts[g] .. starts[g + 1]). */
  private starts = new Uint32Array(2);
  private groupOf = new Uint16Array(0);

  private grid = 1;
  private gridStarts = new Uint32Array(2);
  private gridItems = new Uint32Array(0);

  private selected = new Uint8Array(0);
  private selectedCount = 0;
  private emphasis: Emphasis = { clicked: -1, neighbors: [], topk: [], pointed: [] };
  private hovered = -1;

  private width = 0;
  private height = 300;
  private dpr = 1;
  private zoom = 1;
  private cx = 0.5;
  private cy = 0.5;
  private mode: Mode = 'pan';
  private drag: Drag | null = null;
  private frame = 0;

  constructor(events: MapEvents) {
    this.events = events;
    this.element = h('div', 'jme-map-box');
    this.canvas = h('canvas', 'jme-map');
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'Map of the embeddings');
    this.tip = h('div', 'jme-tip');
    this.element.append(this.canvas, this.tip);
    const ctx = this.canvas.getContext('2d');
    if (!ctx) {
      throw new Error('no 2D canvas context');
    }
    this.ctx = ctx;
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.element);
    this.listen();
  }

  // Data --------------------------------------------------------------------------------

  /** Positions, interleaved x, y (float32, n x 2). Resets the view. */
  setData(xy: Float32Array): void {
    const n = Math.floor(xy.length / 2);
    this.n = n;
    this.xs = new Float32Array(n);
    this.ys = new Float32Array(n);
    this.sx = new Float32Array(n);
    this.sy = new Float32Array(n);
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i];
      const y = xy[2 * i + 1];
      this.xs[i] = x;
      this.ys[i] = y;
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
    if (!n) {
      x0 = y0 = 0;
      x1 = y1 = 1;
    }
    // A single point (or a line) still needs a non-empty box to fit.
    const pad = Math.max(x1 - x0, y1 - y0, 1e-6) * 0.02;
    this.x0 = x0 - pad;
    this.x1 = x1 + pad;
    this.y0 = y0 - pad;
    this.y1 = y1 + pad;
    this.selected = new Uint8Array(n);
    this.selectedCount = 0;
    this.hovered = -1;
    this.buildGrid();
    this.setGroups(new Uint8Array(n), [DEFAULT_POINT]);
    this.resetView();
  }

  /** Colours: point i gets palette[group[i]]; higher groups are drawn on top. */
  setGroups(group: ArrayLike<number>, palette: string[]): void {
    const groups = Math.max(1, palette.length);
    const counts = new Uint32Array(groups + 1);
    this.groupOf = new Uint16Array(this.n);
    for (let i = 0; i < this.n; i++) {
      const g = this.clampGroup(group[i], groups);
      this.groupOf[i] = g;
      counts[g + 1]++;
    }
    for (let g = 0; g < groups; g++) {
      counts[g + 1] += counts[g];
    }
    this.starts = counts.slice();
    const next = counts.slice(0, groups);
    this.order = new Uint32Array(this.n);
    for (let i = 0; i < this.n; i++) {
      this.order[next[this.groupOf[i]]++] = i;
    }
    this.palette = palette.length ? palette : [DEFAULT_POINT];
    this.request();
  }

  setSelection(indices: readonly number[]): void {
    this.selected.fill(0);
    let count = 0;
    for (const i of indices) {
      if (i >= 0 && i < this.n && !this.selected[i]) {
        this.selected[i] = 1;
        count++;
      }
    }
    this.selectedCount = count;
    this.request();
  }

  setEmphasis(emphasis: Partial<Emphasis>): void {
    this.emphasis = { ...this.emphasis, ...emphasis };
    this.request();
  }

  setMode(mode: Mode): void {
    this.mode = mode;
    this.canvas.classList.toggle('jme-select-mode', mode === 'select');
  }

  setHeight(px: number): void {
    this.height = Math.max(120, Math.round(px) || 300);
    this.resize();
  }

  resetView(): void {
    this.zoom = 1;
    this.cx = (this.x0 + this.x1) / 2;
    this.cy = (this.y0 + this.y1) / 2;
    this.request();
  }

  /** Background colour of the map (for colour scales that fade into it). */
  background(): RGB {
    const dark = document.body.dataset.jpThemeLight === 'false';
    return parseColor(getComputedStyle(this.element).backgroundColor, dark ? [17, 17, 17] : [255, 255, 255]);
  }

  /** Redraw on the next frame (e.g. after a theme change). */
  request(): void {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.draw();
      });
    }
  }

  destroy(): void {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.resizeObserver.disconnect();
  }

  // Geometry ----------------------------------------------------------------------------

  private clampGroup(g: number, groups: number): number {
    return g >= 0 && g < groups ? g | 0 : 0;
  }

  private scale(): number {
    const w = Math.max(1, this.width - 2 * PADDING);
    const hgt = Math.max(1, this.height - 2 * PADDING);
    return Math.min(w / (this.x1 - this.x0), hgt / (this.y1 - this.y0)) * this.zoom;
  }

  /** Screen position (CSS px) to data coordinates. */
  private toData(x: number, y: number): [number, number] {
    const s = this.scale();
    return [this.cx + (x - this.width / 2) / s, this.cy - (y - this.height / 2) / s];
  }

  private radius(): number {
    const base = this.n > 10000 ? 1.6 : this.n > 3000 ? 2.2 : this.n > 500 ? 3 : 4.5;
    // Grow a little when zoomed in, so that dense clusters open up.
    return Math.min(base * Math.pow(this.zoom, 0.25), base * 2.5);
  }

  private resize(): void {
    const width = this.element.clientWidth;
    const dpr = window.devicePixelRatio || 1;
    if (width === this.width && dpr === this.dpr && this.canvas.height === Math.round(this.height * dpr)) {
      return;
    }
    this.width = width;
    this.dpr = dpr;
    this.canvas.width = Math.max(1, Math.round(width * dpr));
    this.canvas.height = Math.max(1, Math.round(this.height * dpr));
    this.canvas.style.height = `${this.height}px`;
    this.draw();
  }

  private buildGrid(): void {
    // About four points per cell on average.
    const g = Math.max(1, Math.min(512, Math.ceil(Math.sqrt(this.n / 4))));
    this.grid = g;
    const cells = new Uint32Array(this.n);
    const starts = new Uint32Array(g * g + 1);
    for (let i = 0; i < this.n; i++) {
      const c = this.cellOf(this.xs[i], this.ys[i]);
      cells[i] = c;
      starts[c + 1]++;
    }
    for (let c = 0; c < g * g; c++) {
      starts[c + 1] += starts[c];
    }
    const next = starts.slice(0, g * g);
    const items = new Uint32Array(this.n);
    for (let i = 0; i < this.n; i++) {
      items[next[cells[i]]++] = i;
    }
    this.gridStarts = starts;
    this.gridItems = items;
  }

  private cellX(x: number): number {
    const g = this.grid;
    return Math.min(g - 1, Math.max(0, Math.floor(((x - this.x0) / (this.x1 - this.x0)) * g)));
  }

  private cellY(y: number): number {
    const g = this.grid;
    return Math.min(g - 1, Math.max(0, Math.floor(((y - this.y0) / (this.y1 - this.y0)) * g)));
  }

  private cellOf(x: number, y: number): number {
    return this.cellY(y) * this.grid + this.cellX(x);
  }

  /** The point nearest to screen position (x, y) within `reach` px, or -1. */
  private pick(x: number, y: number, reach: number): number {
    if (!this.n) {
      return -1;
    }
    const s = this.scale();
    const [px, py] = this.toData(x, y);
    const r = reach / s;
    const gx0 = this.cellX(px - r);
    const gx1 = this.cellX(px + r);
    const gy0 = this.cellY(py - r);
    const gy1 = this.cellY(py + r);
    let best = -1;
    let bestDist = r * r;
    for (let gy = gy0; gy <= gy1; gy++) {
      for (let gx = gx0; gx <= gx1; gx++) {
        const c = gy * this.grid + gx;
        for (let j = this.gridStarts[c]; j < this.gridStarts[c + 1]; j++) {
          const i = this.gridItems[j];
          const dx = this.xs[i] - px;
          const dy = this.ys[i] - py;
          const d = dx * dx + dy * dy;
          if (d <= bestDist) {
            bestDist = d;
            best = i;
          }
        }
      }
    }
    return best;
  }

  private inBox(d: Drag): number[] {
    const [ax, ay] = this.toData(Math.min(d.x0, d.x), Math.max(d.y0, d.y));
    const [bx, by] = this.toData(Math.max(d.x0, d.x), Math.min(d.y0, d.y));
    const found: number[] = [];
    for (let i = 0; i < this.n; i++) {
      const x = this.xs[i];
      const y = this.ys[i];
      if (x >= ax && x <= bx && y >= ay && y <= by) {
        found.push(i);
      }
    }
    return found;
  }

  private zoomAt(x: number, y: number, factor: number): void {
    const [dx, dy] = this.toData(x, y);
    this.zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.zoom * factor));
    const s = this.scale();
    // Keep the data point under the pointer where it is.
    this.cx = dx - (x - this.width / 2) / s;
    this.cy = dy + (y - this.height / 2) / s;
    this.request();
  }

  // Events ------------------------------------------------------------------------------

  private local(e: MouseEvent): [number, number] {
    const rect = this.canvas.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  }

  private listen(): void {
    const canvas = this.canvas;
    canvas.addEventListener('pointerdown', e => {
      if (e.button !== 0) {
        return;
      }
      canvas.setPointerCapture(e.pointerId);
      const [x, y] = this.local(e);
      const box = e.shiftKey || this.mode === 'select';
      this.drag = { kind: box ? 'box' : 'pan', x0: x, y0: y, x, y, moved: false };
      this.hideTip();
    });
    canvas.addEventListener('pointermove', e => {
      const [x, y] = this.local(e);
      const d = this.drag;
      if (!d) {
        this.hover(x, y);
        return;
      }
      if (!d.moved && Math.hypot(x - d.x0, y - d.y0) > CLICK_SLOP) {
        d.moved = true;
        canvas.classList.toggle('jme-panning', d.kind === 'pan');
      }
      if (d.kind === 'pan' && d.moved) {
        const s = this.scale();
        this.cx -= (x - d.x) / s;
        this.cy += (y - d.y) / s;
      }
      d.x = x;
      d.y = y;
      this.request();
    });
    const finish = (e: PointerEvent, cancelled: boolean): void => {
      const d = this.drag;
      this.drag = null;
      canvas.classList.remove('jme-panning');
      if (!d || cancelled) {
        this.request();
        return;
      }
      const [x, y] = this.local(e);
      d.x = x;
      d.y = y;
      if (!d.moved) {
        this.events.click(this.pick(x, y, this.radius() + 5));
      } else if (d.kind === 'box') {
        this.events.select(this.inBox(d));
      }
      this.request();
    };
    canvas.addEventListener('pointerup', e => finish(e, false));
    canvas.addEventListener('pointercancel', e => finish(e, true));
    canvas.addEventListener('pointerleave', () => {
      if (!this.drag && this.hovered !== -1) {
        this.hovered = -1;
        this.hideTip();
        this.request();
      }
    });
    canvas.addEventListener(
      'wheel',
      e => {
        e.preventDefault();
        const [x, y] = this.local(e);
        const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? this.height : 1;
        this.zoomAt(x, y, Math.exp(-e.deltaY * unit * 0.0015));
      },
      { passive: false }
    );
    canvas.addEventListener('dblclick', () => this.resetView());
    canvas.addEventListener('keydown', e => {
      if (e.key === '+' || e.key === '=') {
        this.zoomAt(this.width / 2, this.height / 2, 1.25);
      } else if (e.key === '-') {
        this.zoomAt(this.width / 2, this.height / 2, 0.8);
      } else if (e.key === '0') {
        this.resetView();
      } else if (e.key === 'Escape') {
        this.events.select([]);
        this.events.click(-1);
      } else {
        return;
      }
      e.preventDefault();
    });
  }

  private hover(x: number, y: number): void {
    const i = this.pick(x, y, this.radius() + 5);
    if (i === this.hovered) {
      if (i >= 0) {
        placeTooltip(this.tip, this.element, x, y);
      }
      return;
    }
    this.hovered = i;
    if (i < 0) {
      this.hideTip();
    } else {
      this.fillTip(i);
      placeTooltip(this.tip, this.element, x, y);
    }
    this.request();
  }

  private fillTip(i: number): void {
    const info = this.describe(i);
    const text = h('div', 'jme-tip-text', shorten(info.text, 280));
    const meta = h('div', 'jme-tip-meta');
    if (info.label !== undefined) {
      const swatch = h('span', 'jme-swatch');
      swatch.style.background = info.color ?? DEFAULT_POINT;
      meta.append(swatch, h('span', '', info.label));
    }
    meta.append(h('span', '', `#${i}`));
    if (info.score !== undefined) {
      meta.append(h('span', 'jme-tip-score', `similarity ${score(info.score)}`));
    }
    this.tip.replaceChildren(text, meta);
  }

  private hideTip(): void {
    this.tip.style.display = 'none';
  }

  // Drawing -----------------------------------------------------------------------------

  private draw(): void {
    const { ctx, width, height, dpr } = this;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(this.element);
    const fg = style.color || '#222';
    if (!this.n) {
      ctx.fillStyle = fg;
      ctx.globalAlpha = 0.6;
      ctx.font = `13px ${style.fontFamily}`;
      ctx.textAlign = 'center';
      ctx.fillText('No points', width / 2, height / 2);
      ctx.globalAlpha = 1;
      return;
    }
    const s = this.scale();
    const ox = width / 2 - this.cx * s;
    const oy = height / 2 + this.cy * s;
    for (let i = 0; i < this.n; i++) {
      this.sx[i] = this.xs[i] * s + ox;
      this.sy[i] = oy - this.ys[i] * s;
    }
    const r = this.radius();
    if (this.selectedCount > 0) {
      // Selected points on top at full strength, the rest faded.
      ctx.globalAlpha = 0.3;
      this.fillPoints(r, null);
      ctx.globalAlpha = 1;
      this.fillPoints(r, this.selected);
      if (this.selectedCount <= OUTLINE_LIMIT) {
        this.outlineSelected(r);
      }
    } else {
      ctx.globalAlpha = 0.88;
      this.fillPoints(r, null);
      ctx.globalAlpha = 1;
    }
    this.drawEmphasis(r, fg, style.fontFamily);
    const d = this.drag;
    if (d && d.kind === 'box' && d.moved) {
      const x = Math.min(d.x0, d.x);
      const y = Math.min(d.y0, d.y);
      const w = Math.abs(d.x - d.x0);
      const hgt = Math.abs(d.y - d.y0);
      ctx.fillStyle = fg;
      ctx.globalAlpha = 0.08;
      ctx.fillRect(x, y, w, hgt);
      ctx.globalAlpha = 0.7;
      ctx.strokeStyle = fg;
      ctx.setLineDash([4, 3]);
      ctx.lineWidth = 1;
      ctx.strokeRect(x + 0.5, y + 0.5, w, hgt);
      ctx.setLineDash([]);
      ctx.globalAlpha = 1;
    }
  }

  /** One path and one fill per colour group; off-screen points are skipped. */
  private fillPoints(r: number, only: Uint8Array | null): void {
    const { ctx, width, height, sx, sy, order, starts } = this;
    const square = r < 2;
    for (let g = 0; g + 1 < starts.length; g++) {
      if (starts[g] === starts[g + 1]) {
        continue;
      }
      ctx.fillStyle = this.palette[g] ?? DEFAULT_POINT;
      ctx.beginPath();
      for (let j = starts[g]; j < starts[g + 1]; j++) {
        const i = order[j];
        if (only && !only[i]) {
          continue;
        }
        const x = sx[i];
        const y = sy[i];
        if (x < -r || y < -r || x > width + r || y > height + r) {
          continue;
        }
        if (square) {
          ctx.rect(x - r, y - r, 2 * r, 2 * r);
        } else {
          ctx.moveTo(x + r, y);
          ctx.arc(x, y, r, 0, TAU);
        }
      }
      ctx.fill();
    }
  }

  /** A thin ring around each selected point: they stay visible when their colour is faint. */
  private outlineSelected(r: number): void {
    const { ctx, width, height, sx, sy } = this;
    const style = getComputedStyle(this.element);
    ctx.strokeStyle = style.color || '#222';
    ctx.globalAlpha = 0.5;
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let i = 0; i < this.n; i++) {
      if (!this.selected[i]) {
        continue;
      }
      const x = sx[i];
      const y = sy[i];
      if (x < -r || y < -r || x > width + r || y > height + r) {
        continue;
      }
      ctx.moveTo(x + r + 1, y);
      ctx.arc(x, y, r + 1, 0, TAU);
    }
    ctx.stroke();
    ctx.globalAlpha = 1;
  }

  private ring(i: number, r: number, color: string, width: number): void {
    if (i < 0 || i >= this.n) {
      return;
    }
    const ctx = this.ctx;
    ctx.beginPath();
    ctx.arc(this.sx[i], this.sy[i], r, 0, TAU);
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.stroke();
  }

  private drawEmphasis(r: number, fg: string, font: string): void {
    const { ctx } = this;
    const e = this.emphasis;
    // Emphasised points at full strength even when faded (unselected, low similarity).
    for (const j of [...e.neighbors, ...e.topk, ...e.pointed, e.clicked, this.hovered]) {
      if (j >= 0 && j < this.n) {
        ctx.fillStyle = this.palette[this.groupOf[j]] ?? DEFAULT_POINT;
        ctx.beginPath();
        ctx.arc(this.sx[j], this.sy[j], r, 0, TAU);
        ctx.fill();
      }
    }
    const halo = isDark(this.background()) ? 'rgba(0,0,0,0.85)' : 'rgba(255,255,255,0.9)';
    const clicked = e.clicked >= 0 && e.clicked < this.n ? e.clicked : -1;
    if (clicked >= 0 && e.neighbors.length) {
      ctx.strokeStyle = fg;
      ctx.globalAlpha = 0.35;
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (const j of e.neighbors) {
        if (j >= 0 && j < this.n) {
          ctx.moveTo(this.sx[clicked], this.sy[clicked]);
          ctx.lineTo(this.sx[j], this.sy[j]);
        }
      }
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    for (const j of e.neighbors) {
      this.ring(j, r + 3, halo, 3.5);
      this.ring(j, r + 3, fg, 1.5);
    }
    // Top-k: rings and rank numbers.
    ctx.font = `600 10px ${font}`;
    ctx.textBaseline = 'middle';
    e.topk.forEach((j, rank) => {
      if (j < 0 || j >= this.n) {
        return;
      }
      this.ring(j, r + 3.5, halo, 4);
      this.ring(j, r + 3.5, '#e15759', 2);
      const x = this.sx[j] + r + 6;
      const y = this.sy[j] - r - 4;
      ctx.lineWidth = 3;
      ctx.strokeStyle = halo;
      ctx.strokeText(String(rank + 1), x, y);
      ctx.fillStyle = fg;
      ctx.fillText(String(rank + 1), x, y);
    });
    if (clicked >= 0) {
      this.ring(clicked, r + 5, halo, 5);
      this.ring(clicked, r + 5, fg, 2.5);
    }
    for (const j of e.pointed) {
      this.ring(j, r + 7, halo, 5);
      this.ring(j, r + 7, '#f28e2b', 2.5);
    }
    if (this.hovered >= 0) {
      this.ring(this.hovered, r + 2.5, fg, 1.5);
    }
  }
}
