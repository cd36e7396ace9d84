/**
 * The map's overlay: a 2-D canvas over the points drawing what WebGL does not: query hits
 * with their ranks, neighbours, the clicked point, points pointed at from elsewhere, cluster
 * labels and the box being dragged. Redrawn on request, coalesced into one animation frame;
 * it only touches the few marked points and labels, never all points.
 */

import { withAlpha } from './colors';
import { cssVar, h } from './dom';
import { Box, clusterSpot, place, rankSpots } from './labels';
import type { ClusterLabel, ContourSet } from './protocol';

const LABEL_FONT = '600 11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const RANK_FONT = '600 10px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

/** Points marked on the overlay. */
export interface Marks {
  clicked: number;
  neighbors: readonly number[];
  topk: readonly number[];
  /** Points pointed at from elsewhere (a table row, a heatmap cell). */
  pointed: readonly number[];
}

/** A box being dragged: where the press was (x0, y0) and where the pointer is (CSS px). */
export interface DragBox {
  x0: number;
  y0: number;
  x: number;
  y: number;
}

/** What the overlay shows, read at each redraw. */
export interface OverlayScene {
  /** Points on the map (marks at other indices are ignored). */
  n: number;
  marks: Marks;
  /** In regl-scatterplot's normalised space: coarse regions then dense ones, largest first. */
  clusters: readonly ClusterLabel[];
  /** Density lines, in regl-scatterplot's normalised space. */
  contours: readonly ContourSet[];
  showClusters: boolean;
  /** How far the view is zoomed in from the fitted one (1: fitted). */
  zoom: number;
  /** Whether a point is hidden (by the legend): null for none. */
  hidden: Uint8Array | null;
  box: DragBox | null;
}

/** From this zoom on (relative to the fitted view), the dense regions' labels show too. */
export const FINE_LABELS_ZOOM = 2.5;

/**
 * The cluster labels to place, in order of priority: the coarse regions (level 0) at the
 * fitted view; zoomed in, the dense regions first, then the coarse ones where room is left.
 * A label most of whose points are hidden is left out.
 */
export function labelsToShow(
  clusters: readonly ClusterLabel[],
  zoom: number,
  hidden: Uint8Array | null
): ClusterLabel[] {
  const fine = zoom >= FINE_LABELS_ZOOM;
  const wanted = clusters.filter(c => (c.level ?? 0) === 0 || fine);
  const shown = hidden
    ? wanted.filter(c => {
        const members = c.members ?? [];
        const kept = members.reduce((sum, i) => sum + (hidden[i] ? 0 : 1), 0);
        return !members.length || kept * 2 >= members.length;
      })
    : wanted;
  return fine ? [...shown.filter(c => c.level === 1), ...shown.filter(c => (c.level ?? 0) === 0)] : shown;
}

/** The map the overlay lies on: its size and projection. */
export interface OverlayHost {
  /** Takes the colours (CSS variables) from here. */
  readonly element: HTMLElement;
  /** The map box's size (CSS px). */
  size(): [number, number];
  /** Normalised data space to CSS px in the map box. */
  toScreen(x: number, y: number): [number, number];
  /** Where point `index` is in the map box (CSS px). */
  position(index: number): [number, number];
  scene(): OverlayScene;
}

export class Overlay {
  readonly canvas: HTMLCanvasElement;
  private readonly ctx: CanvasRenderingContext2D;
  private readonly host: OverlayHost;
  private frame = 0;

  constructor(host: OverlayHost) {
    this.host = host;
    this.canvas = h('canvas', 'jme-overlay');
    const ctx = this.canvas.getContext('2d');
    if (!ctx) {
      throw new Error('no 2D canvas context');
    }
    this.ctx = ctx;
  }

  /** Redraws in the next animation frame (once, however often it is asked). */
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
  }

  private draw(): void {
    const { ctx, canvas, host } = this;
    const [w, hgt] = host.size();
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(hgt * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    const scene = host.scene();
    if (!scene.n) {
      return;
    }
    const { marks } = scene;
    const fg = cssVar(host.element, '--jme-fg', '#1f2328');
    const bg = cssVar(host.element, '--jme-bg', '#ffffff');
    const hit = cssVar(host.element, '--jme-hit', '#d81b60');
    const neighbor = cssVar(host.element, '--jme-neighbor', '#00897b');
    const taken: Box[] = [];
    const valid = (i: number): boolean => i >= 0 && i < scene.n;

    // Density lines under everything else: inner (denser) lines stronger.
    for (const set of scene.contours) {
      ctx.strokeStyle = withAlpha(set.color || fg, set.color ? 0.9 : 0.35 + 0.5 * (1 - set.share));
      ctx.lineWidth = set.color ? 1.5 : 1.2;
      for (const path of set.paths) {
        ctx.beginPath();
        for (let i = 0; i < path.length; i += 2) {
          const [x, y] = host.toScreen(path[i], path[i + 1]);
          if (i) {
            ctx.lineTo(x, y);
          } else {
            ctx.moveTo(x, y);
          }
        }
        ctx.closePath();
        ctx.stroke();
      }
    }
    // Cluster labels first, so that marks never push them off (rank numbers go around them);
    // a label that would overlap another is hidden. The labels drawn are listed in the map
    // box's data-labels (one a line), for tests and assistive reading, and the zoom in its
    // data-zoom.
    const placed: string[] = [];
    if (scene.showClusters) {
      ctx.font = LABEL_FONT;
      ctx.textBaseline = 'middle';
      ctx.textAlign = 'center';
      for (const cluster of labelsToShow(scene.clusters, scene.zoom, scene.hidden)) {
        const [x, y] = host.toScreen(cluster.x, cluster.y);
        const tw = ctx.measureText(cluster.label).width + 10;
        if (x < 0 || y < 0 || x > w || y > hgt) {
          continue; // its centre is out of view
        }
        const spot = place([clusterSpot(x, y, tw, w, hgt)], taken, w, hgt);
        if (spot) {
          placed.push(cluster.label);
          // Nearly opaque: selected or dense points under a label must not blot it out.
          roundRect(ctx, spot, withAlpha(bg, 0.85), cssVar(host.element, '--jme-border', '#d8dde3'));
          ctx.fillStyle = fg;
          ctx.fillText(cluster.label, spot.x + spot.w / 2, spot.y + spot.h / 2 + 0.5);
        }
      }
    }
    // Neighbours: diamonds.
    ctx.lineWidth = 2;
    ctx.strokeStyle = neighbor;
    for (const i of marks.neighbors.filter(valid)) {
      const [x, y] = host.position(i);
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
    marks.topk.forEach((i, rank) => {
      if (!valid(i)) {
        return;
      }
      const [x, y] = host.position(i);
      ctx.beginPath();
      ctx.arc(x, y, 7, 0, Math.PI * 2);
      ctx.stroke();
      const text = String(rank + 1);
      const spot = place(rankSpots(x, y, ctx.measureText(text).width + 6, 14), taken, w, hgt);
      if (spot) {
        roundRect(ctx, spot, hit);
        ctx.fillStyle = '#ffffff';
        ctx.textBaseline = 'middle';
        ctx.textAlign = 'center';
        ctx.fillText(text, spot.x + spot.w / 2, spot.y + spot.h / 2 + 0.5);
      }
    });
    // The clicked point: a thick ring and a cross.
    if (valid(marks.clicked)) {
      const [x, y] = host.position(marks.clicked);
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
    for (const i of marks.pointed.filter(valid)) {
      const [x, y] = host.position(i);
      ctx.beginPath();
      ctx.arc(x, y, 11, 0, Math.PI * 2);
      ctx.stroke();
    }
    // Written only when they change: this runs every frame while the view moves.
    const dataset = host.element.dataset;
    const labels = placed.join('\n');
    const zoom = scene.zoom.toFixed(2);
    if (dataset.labels !== labels) {
      dataset.labels = labels;
    }
    if (dataset.zoom !== zoom) {
      dataset.zoom = zoom;
    }
    if (scene.box) {
      const b = scene.box;
      const accent = cssVar(host.element, '--jme-accent', '#1976d2');
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
