/**
 * The views of each explorer on the page, so that a new view can retire the ones it
 * replaces (their WebGL contexts and model listeners would otherwise live on).
 */

/** A view of a model on the page. */
export interface View {
  el: HTMLElement;
  retire: () => void;
  /** What the view replacing this one takes over (e.g. a query being typed, the focus). */
  handOver?: () => unknown;
  /** Takes over what the view it replaces handed over. */
  takeOver?: (state: unknown) => void;
}

/** Live views per explorer (its `view_key`: anywidget hands each view its own model object). */
const VIEWS = new Map<string, Set<View>>();

/** The output-area node a view is shown in (JupyterLab, Notebook 7), if any. */
const OUTPUT = '.jp-OutputArea-output';

/**
 * Adds `view` to the views of explorer `key` and retires those it replaces once it is in
 * the page (see retireOlderViews). Returns what removes it again, given the key then.
 */
export function registerView(key: string, view: View): (key: string) => void {
  let views = VIEWS.get(key);
  if (!views) {
    views = new Set();
    VIEWS.set(key, views);
  }
  const own = views;
  own.add(view);
  retireOlderViews(view, own);
  return current => {
    own.delete(view);
    if (!own.size) {
      VIEWS.delete(current);
    }
  };
}

/**
 * Once this view is in the page, retire (and hide) the older views it replaces: those of the
 * same model in the same output (an updated display: a new static PNG), and, in JupyterLab
 * and Notebook 7, those taken out of their output. Showing a display again renders every
 * output of its id anew, and the view removed from an output is not disposed: it would keep
 * its WebGL context and its model listeners. A view merely detached with its cell (a
 * notebook's windowing) is still inside its output node and is kept.
 */
function retireOlderViews(view: View, views: Set<View>): void {
  let tries = 0;
  const check = (): void => {
    const parent = view.el.parentElement;
    if (!parent) {
      if (tries++ < 120 && views.has(view)) {
        requestAnimationFrame(check);
      }
      return;
    }
    const inOutputs = view.el.closest(OUTPUT) !== null;
    for (const other of [...views]) {
      if (other === view) {
        continue;
      }
      const removed = inOutputs && !other.el.isConnected && other.el.closest(OUTPUT) === null;
      if (removed || parent.contains(other.el)) {
        // A display updated while someone types (a new static PNG): the new view goes on.
        const state = other.handOver?.();
        other.retire();
        other.el.style.display = 'none';
        if (state !== undefined) {
          view.takeOver?.(state);
        }
      }
    }
  };
  requestAnimationFrame(check);
}
