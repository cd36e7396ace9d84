/**
 * The similarity heatmap: an m x m matrix (m <= ~200, rows in Python's seriated order)
 * drawn from an m x m pixel image scaled up without smoothing, rows and columns labelled by
 * short text. The colour scale is fixed (0.0 to 1.0), so two heatmaps compare at a glance;
 * the whole view folds away (a <details> element).
 */

import { css, viridis } from './colors';
import { h, placeTooltip } from './dom';
import { score, shorten } from './format';

const LABEL_CHARS = 22;
const FONT_PX = 10;
const MAX_CELL = 22;
/** Largest side of the matrix itself (px): 200 items get 2 px cells, 20 items 22 px. */
const MAX_SIDE = 520;
const BAR_SPACE = 64;

export interface HeatmapEvents {
  /** The pointer is over the cell of items (row, col); -1, -1 when it leaves. */
  hover(row: number, col: number): void;
  /** A cell was clicked: its row item. */
  click(index: number): void;
}

export class HeatmapView {
  readonly element: HTMLDetailsElement;
  private readonly note: HTMLDivElement;
  private readonly box: HTMLDivElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly tip: HTMLDivElement;
  private readonly ctx: CanvasRenderingContext2D;
  private readonly image: HTMLCanvasElement;
  private readonly events: HeatmapEvents;
  private readonly resizeObserver: ResizeObserver;

  private m = 0;
  private values: Float32Array = new Float32Array(0);
  private indices: number[] = [];
  private texts: string[] = [];
  // A fixed scale: cosine similarity 0 (or less) to 1.
  private readonly lo = 0;
  private readonly hi = 1;
  private cell = 4;
  private left = 0;
  private top = 0;
  private step = 1;
  private hoverRow = -1;
  private hoverCol = -1;
  private availableWidth = 0;

  constructor(events: HeatmapEvents) {
    this.events = events;
    this.element = h('details', 'jme-heatmap');
    this.element.open = true;
    const head = h('summary', 'jme-heatmap-head');
    head.append(h('span', 'jme-section', 'Similarity heatmap'));
    this.note = h('div', 'jme-heatmap-note');
    const key = h('div', 'jme-heatmap-key');
    const bar = h('span', 'jme-ramp');
    bar.style.background = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map(t => css(viridis(t))).join(', ')})`;
    key.append(h('span', '', '0.0 unrelated'), bar, h('span', '', '1.0 identical'));
    head.append(this.note, key);
    this.box = h('div', 'jme-heatmap-box');
    this.canvas = h('canvas', 'jme-heatmap-canvas');
    this.tip = h('div', 'jme-tip');
    this.box.append(this.canvas, this.tip);
    this.element.append(head, this.box);
    const ctx = this.canvas.getContext('2d');
    if (!ctx) {
      throw new Error('no 2D canvas context');
    }
    this.ctx = ctx;
    this.image = document.createElement('canvas');
    this.resizeObserver = new ResizeObserver(() => {
      if (this.box.clientWidth !== this.availableWidth) {
        this.layout();
      }
    });
    this.resizeObserver.observe(this.box);
    this.listen();
  }

  /**
   * @param values m x m similarities (row-major float32)
   * @param indices the item of each row / column
   * @param labels each row's short text
   * @param note what the matrix shows
   */
  setData(values: Float32Array, indices: readonly number[], labels: readonly string[], note: string): void {
    const m = Math.min(indices.length, Math.floor(Math.sqrt(values.length)));
    this.m = m;
    this.values = values;
    this.indices = indices.slice(0, m);
    this.texts = this.indices.map((index, row) => labels[row] ?? `#${index}`);
    this.note.textContent = note;
    this.paintImage();
    this.layout();
  }

  destroy(): void {
    this.resizeObserver.disconnect();
  }

  /** Redraw (e.g. after a theme change). */
  refresh(): void {
    this.draw();
  }

  private paintImage(): void {
    const m = this.m;
    this.image.width = Math.max(1, m);
    this.image.height = Math.max(1, m);
    if (!m) {
      return;
    }
    const ictx = this.image.getContext('2d');
    if (!ictx) {
      return;
    }
    const pixels = ictx.createImageData(m, m);
    const span = this.hi - this.lo;
    for (let k = 0; k < m * m; k++) {
      const [r, g, b] = viridis((this.values[k] - this.lo) / span);
      pixels.data[4 * k] = r;
      pixels.data[4 * k + 1] = g;
      pixels.data[4 * k + 2] = b;
      pixels.data[4 * k + 3] = 255;
    }
    ictx.putImageData(pixels, 0, 0);
  }

  private layout(): void {
    const m = this.m;
    this.availableWidth = this.box.clientWidth;
    const available = Math.max(120, this.availableWidth || 600);
    this.ctx.font = `${FONT_PX}px ${getComputedStyle(this.element).fontFamily}`;
    let widest = 0;
    for (const text of this.texts) {
      widest = Math.max(widest, this.ctx.measureText(shorten(text, LABEL_CHARS)).width);
    }
    const gutter = m ? Math.min(150, Math.ceil(widest) + 8) : 0;
    const cell = m
      ? Math.max(2, Math.min(MAX_CELL, Math.floor(Math.min(MAX_SIDE, available - gutter - BAR_SPACE) / m)))
      : 0;
    this.cell = cell;
    this.left = gutter;
    this.top = gutter;
    // Labels at least a line apart: every `step`-th one when cells are small.
    this.step = Math.max(1, Math.ceil((FONT_PX + 1) / Math.max(cell, 1)));
    const width = m ? gutter + m * cell + BAR_SPACE : 0;
    const height = m ? gutter + m * cell + 4 : 0;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(width * dpr));
    this.canvas.height = Math.max(1, Math.round(height * dpr));
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.canvas.style.display = m ? 'block' : 'none';
    this.draw();
  }

  private draw(): void {
    const { ctx, m, cell, left, top } = this;
    if (!m) {
      return;
    }
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.image, left, top, m * cell, m * cell);

    const style = getComputedStyle(this.element);
    const fg = style.color || '#222';
    ctx.font = `${FONT_PX}px ${style.fontFamily}`;
    ctx.fillStyle = fg;
    ctx.textBaseline = 'middle';
    for (let r = 0; r < m; r += this.step) {
      const label = shorten(this.texts[r], LABEL_CHARS);
      const mid = top + (r + 0.5) * cell;
      ctx.globalAlpha = r === this.hoverRow || this.hoverRow < 0 ? 1 : 0.7;
      ctx.textAlign = 'right';
      ctx.fillText(label, left - 4, mid);
      ctx.save();
      ctx.translate(left + (r + 0.5) * cell, top - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = 'left';
      ctx.globalAlpha = r === this.hoverCol || this.hoverCol < 0 ? 1 : 0.7;
      ctx.fillText(label, 0, 0);
      ctx.restore();
    }
    ctx.globalAlpha = 1;

    if (this.hoverRow >= 0 && this.hoverCol >= 0) {
      ctx.strokeStyle = fg;
      ctx.lineWidth = 1;
      ctx.strokeRect(left + 0.5, top + this.hoverRow * cell + 0.5, m * cell - 1, cell - 1);
      ctx.strokeRect(left + this.hoverCol * cell + 0.5, top + 0.5, cell - 1, m * cell - 1);
    }

    // Colour bar.
    const barX = left + m * cell + 14;
    const barH = Math.min(m * cell, 160);
    const gradient = ctx.createLinearGradient(0, top + barH, 0, top);
    for (let k = 0; k <= 8; k++) {
      gradient.addColorStop(k / 8, css(viridis(k / 8)));
    }
    ctx.fillStyle = gradient;
    ctx.fillRect(barX, top, 10, barH);
    ctx.fillStyle = fg;
    ctx.textAlign = 'left';
    ctx.fillText(score(this.hi), barX + 14, top + 5);
    ctx.fillText(score(this.lo), barX + 14, top + barH - 5);
  }

  private cellAt(e: MouseEvent): [number, number] {
    const rect = this.canvas.getBoundingClientRect();
    const x = e.clientX - rect.left - this.left;
    const y = e.clientY - rect.top - this.top;
    const col = Math.floor(x / this.cell);
    const row = Math.floor(y / this.cell);
    if (x < 0 || y < 0 || row >= this.m || col >= this.m) {
      return [-1, -1];
    }
    return [row, col];
  }

  private listen(): void {
    this.canvas.addEventListener('mousemove', e => {
      const [row, col] = this.cellAt(e);
      const changed = row !== this.hoverRow || col !== this.hoverCol;
      this.hoverRow = row;
      this.hoverCol = col;
      const boxRect = this.box.getBoundingClientRect();
      const x = e.clientX - boxRect.left + this.box.scrollLeft;
      const y = e.clientY - boxRect.top;
      if (row < 0) {
        this.tip.style.display = 'none';
      } else {
        if (changed) {
          const value = this.values[row * this.m + col];
          this.tip.replaceChildren(
            h('div', 'jme-tip-text', shorten(this.texts[row], 120)),
            h('div', 'jme-tip-vs', '↔'),
            h('div', 'jme-tip-text', shorten(this.texts[col], 120)),
            h('div', 'jme-tip-meta', `#${this.indices[row]} · #${this.indices[col]} · cosine ${score(value)}`)
          );
        }
        placeTooltip(this.tip, this.box, x, y);
      }
      if (changed) {
        this.events.hover(row < 0 ? -1 : this.indices[row], col < 0 ? -1 : this.indices[col]);
        this.draw();
      }
    });
    this.canvas.addEventListener('mouseleave', () => {
      this.tip.style.display = 'none';
      if (this.hoverRow >= 0) {
        this.hoverRow = this.hoverCol = -1;
        this.events.hover(-1, -1);
        this.draw();
      }
    });
    this.canvas.addEventListener('click', e => {
      const [row] = this.cellAt(e);
      if (row >= 0) {
        this.events.click(this.indices[row]);
      }
    });
  }
}
