/**
 * What the pointer does on the map: regl-scatterplot's own gestures (pan, zoom, hover, the
 * lasso, clicks on points) turned into the map's events, plus what it lacks: the wheel zooms
 * only when asked to (ctrl, or after a click), a double-click resets the view, presses stay
 * out of the notebook, and the box tool drags a rectangle to select.
 */

import type { DragBox } from './overlay';
import type { MotionSampler, Scatterplot } from './renderer';

export type Mode = 'pan' | 'lasso' | 'box';

export interface GestureEvents {
  /** A point was clicked (not double-clicked). */
  click(index: number): void;
  /** A lasso or box was drawn: the indices inside it. */
  select(indices: number[]): void;
  /** The pointer is over a point (-1: over none); x, y: its position in the map box. */
  hover(index: number, x: number, y: number): void;
}

/** The map the gestures act on. */
export interface GestureHost {
  /** The map box. */
  readonly element: HTMLElement;
  /** Takes the pointer (regl-scatterplot's canvas). */
  readonly canvas: HTMLCanvasElement;
  /** Says how to zoom when the wheel scrolls the page instead. */
  readonly hint: HTMLElement;
  readonly plot: Scatterplot;
  readonly motion: MotionSampler;
  readonly events: GestureEvents;
  mode(): Mode;
  /** Whether the map is changing the selection itself (no events then). */
  quiet(): boolean;
  /** The selection as last reported or set. */
  selection(): readonly number[];
  /** Records a selection regl-scatterplot already shows (a lasso's). */
  keepSelection(indices: number[]): void;
  /** Shows a selection, quietly. */
  setSelection(indices: readonly number[]): void;
  /** regl-scatterplot's view matrix changed (pan, zoom, reset); `byUser`: by a drag or the
   * wheel, not by the program. */
  viewChanged(view: ArrayLike<number>, byUser: boolean): void;
  /** The points inside the rectangle spanned by two corners in the map box (CSS px). */
  pointsInside(a: [number, number], b: [number, number]): number[];
  /** Where point `index` is in the map box (CSS px). */
  position(index: number): [number, number];
  redrawOverlay(): void;
  resetView(): void;
}

/** Pointer travel (px) below which a press is a click, not a box. */
const CLICK_SLOP = 4;
/** A single click waits this long for a second one (a double-click resets the view). */
const DOUBLE_CLICK_MS = 260;
const HINT_MS = 1200;
/** A view change this soon after a wheel event that zoomed counts as the user's. */
const WHEEL_MS = 400;

export class Gestures {
  /** The box being dragged (box tool), or null. */
  box: DragBox | null = null;
  private readonly host: GestureHost;
  private readonly cleanups: (() => void)[] = [];
  private lassoing = false;
  /** The map was clicked and the pointer has not left it: the wheel zooms. */
  private active = false;
  private clickTimer: number | undefined;
  private hintTimer: number | undefined;
  /** A button is held on the map (a drag pans it), or when the wheel last zoomed it. */
  private pressed = false;
  private wheeled = -Infinity;

  constructor(host: GestureHost) {
    this.host = host;
    this.subscribe();
    this.listen();
  }

  destroy(): void {
    window.clearTimeout(this.clickTimer);
    window.clearTimeout(this.hintTimer);
    for (const cleanup of this.cleanups) {
      cleanup();
    }
  }

  /** regl-scatterplot's events. */
  private subscribe(): void {
    const { plot, events } = this.host;
    plot.subscribe('view', ({ view }) =>
      this.host.viewChanged(view, this.pressed || performance.now() - this.wheeled < WHEEL_MS)
    );
    plot.subscribe('lassoStart', () => {
      this.lassoing = true;
    });
    plot.subscribe('select', ({ points }) => {
      if (this.host.quiet()) {
        return;
      }
      if (this.lassoing) {
        this.lassoing = false;
        this.host.keepSelection([...points]);
        events.select([...points]);
        return;
      }
      // A click on a point: regl-scatterplot selects it; we keep the selection as it was
      // and report a click, unless a second click makes it a double-click.
      this.host.setSelection(this.host.selection());
      window.clearTimeout(this.clickTimer);
      const index = points[0];
      this.clickTimer = window.setTimeout(() => events.click(index), DOUBLE_CLICK_MS);
    });
    plot.subscribe('deselect', () => {
      if (!this.host.quiet() && this.host.selection().length) {
        this.host.keepSelection([]);
        events.select([]);
      }
    });
    plot.subscribe('pointOver', index => {
      const [x, y] = this.host.position(index);
      events.hover(index, x, y);
    });
    plot.subscribe('pointOut', () => events.hover(-1, 0, 0));
  }

  /** The page's pointer events. */
  private listen(): void {
    const { element, canvas, motion, events } = this.host;
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
      element,
      'wheel',
      e => {
        if (!(e.ctrlKey || e.metaKey || this.active)) {
          e.stopPropagation();
          this.flashHint();
        } else {
          this.wheeled = performance.now();
        }
      },
      { capture: true }
    );
    on(element, 'mousedown', e => {
      this.active = true;
      if (e.button === 0 && this.host.mode() !== 'box') {
        this.pressed = this.host.mode() === 'pan' && !e.shiftKey;
        motion.move(true);
      }
      // The notebook must not see presses on the map: it would take a shift-drag for
      // extending the cell selection (and swallow the lasso's pointer moves).
      e.stopPropagation();
    });
    on(element, 'mouseleave', () => {
      this.active = false;
    });
    on(canvas, 'dblclick', e => {
      e.preventDefault();
      window.clearTimeout(this.clickTimer);
      this.host.resetView();
    });
    // Box selection: in box mode a drag draws a rectangle (the camera is fixed meanwhile).
    on(
      element,
      'mousedown',
      e => {
        if (this.host.mode() !== 'box' || e.button !== 0) {
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
        this.host.redrawOverlay();
      }
    });
    on(window, 'mouseup', e => {
      this.pressed = false;
      if (motion.held) {
        motion.move(false);
      }
      const box = this.box;
      if (!box) {
        return;
      }
      this.box = null;
      this.host.redrawOverlay();
      [box.x, box.y] = this.local(e);
      if (Math.abs(box.x - box.x0) < CLICK_SLOP && Math.abs(box.y - box.y0) < CLICK_SLOP) {
        return;
      }
      const inside = this.host.pointsInside([box.x0, box.y0], [box.x, box.y]);
      this.host.setSelection(inside);
      events.select(inside);
    });
  }

  /** The pointer's position in the map box (CSS px). */
  private local(e: MouseEvent): [number, number] {
    const rect = this.host.canvas.getBoundingClientRect();
    return [e.clientX - rect.left, e.clientY - rect.top];
  }

  private flashHint(): void {
    const hint = this.host.hint;
    hint.classList.add('jme-visible');
    window.clearTimeout(this.hintTimer);
    this.hintTimer = window.setTimeout(() => hint.classList.remove('jme-visible'), HINT_MS);
  }
}
