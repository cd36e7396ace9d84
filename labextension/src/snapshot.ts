/**
 * The explorer's static map when its widget is gone. A notebook saved with an explorer and
 * reopened later (no kernel, or a new one) holds the widget's view and the PNG that Python
 * drew beside it; ipywidgets' renderer prefers the view and, finding no model for it, shows
 * "Error displaying widget: model not found". This plugin shows the saved PNG instead, in
 * JupyterLab and Notebook 7, for explorer outputs only (marked by SNAPSHOT_MARK in their
 * metadata), until the live view appears.
 *
 * The widget renderer is ipywidgets' own (a class, one per output); its factory is replaced
 * per notebook when a kernel connects, so the hook is on the class, found through the
 * factory: each render of an explorer output first watches the renderer's node.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';

const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
/** Output metadata key Python sets on explorer outputs (widget.py's SNAPSHOT_MARK; the two are
 * compared by tests/test_explorer_protocol.py). */
export const SNAPSHOT_MARK = 'jupyter_mlx_embed';
/** The live view has this long to appear before the static map stands in for it. */
const GRACE_MS = 800;
/** Left in the renderer's node by ipywidgets when the widget's model is gone. */
const MODEL_GONE = /model not found|Error displaying widget/;

/** ipywidgets' renderer: a Lumino panel, holding the live view as its child widget. */
type Renderer = IRenderMime.IRenderer & { widgets?: readonly unknown[]; __jmeSnapshot?: SnapshotWatch };

/** Whether an output is an explorer's, with a PNG to fall back on. */
export function isExplorerOutput(model: IRenderMime.IMimeModel): boolean {
  return Boolean(model.metadata?.[SNAPSHOT_MARK]) && typeof model.data['image/png'] === 'string';
}

/** Keeps the static map in a widget renderer's node while the live view is not there. */
class SnapshotWatch {
  private readonly renderer: Renderer;
  private png = '';
  private timer: number | undefined;

  constructor(renderer: Renderer) {
    this.renderer = renderer;
    const observer = new MutationObserver(() => this.check(false));
    observer.observe(renderer.node, { childList: true, characterData: true, subtree: true });
    renderer.disposed.connect(() => {
      observer.disconnect();
      window.clearTimeout(this.timer);
    });
  }

  /** A (new) render of an output with this PNG. */
  render(png: string): void {
    this.png = png;
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.check(true), GRACE_MS);
  }

  private check(late: boolean): void {
    const node = this.renderer.node;
    if (!this.png || this.renderer.widgets?.length || node.querySelector('.jme-explorer, .jme-snapshot')) {
      return; // the live view is there (or on its way), or the static map already
    }
    if (late || MODEL_GONE.test(node.textContent || '')) {
      node.replaceChildren(snapshot(this.png));
    }
  }
}

/** The static map and a line saying what it is. */
function snapshot(png: string): HTMLElement {
  const figure = document.createElement('figure');
  figure.className = 'jme-snapshot';
  figure.style.margin = '0';
  const image = document.createElement('img');
  image.src = `data:image/png;base64,${png}`;
  image.alt = 'Map of the embeddings (static)';
  image.style.maxWidth = '100%';
  const caption = document.createElement('figcaption');
  caption.textContent = 'Similarity explorer: the map as saved with the notebook. Run the cell to explore it again.';
  caption.style.cssText = 'font-size: var(--jp-ui-font-size0, 11px); color: var(--jp-ui-font-color2, #666);';
  figure.append(image, caption);
  return figure;
}

/** Hooks the render of ipywidgets' renderer class (once), if its factory is registered. */
function hookWidgetRenderer(rendermime: IRenderMimeRegistry): boolean {
  const factory = rendermime.getFactory(WIDGET_MIME);
  if (!factory) {
    return false;
  }
  const probe = factory.createRenderer({
    mimeType: WIDGET_MIME,
    sanitizer: rendermime.sanitizer,
    resolver: null,
    linkHandler: null,
    latexTypesetter: null
  });
  const proto = Object.getPrototypeOf(probe) as { renderModel: Renderer['renderModel']; __jmeHooked?: boolean };
  probe.dispose();
  if (proto.__jmeHooked) {
    return true;
  }
  const renderModel = proto.renderModel;
  proto.renderModel = function (this: Renderer, model: IRenderMime.IMimeModel): Promise<void> {
    if (isExplorerOutput(model)) {
      this.__jmeSnapshot ??= new SnapshotWatch(this);
      this.__jmeSnapshot.render(model.data['image/png'] as string);
    }
    return renderModel.call(this, model);
  };
  proto.__jmeHooked = true;
  return true;
}

export const snapshotPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-mlx-embed:explorer-snapshot',
  description: "Shows a saved explorer's static map when its widget is gone.",
  autoStart: true,
  requires: [IRenderMimeRegistry],
  activate: (app: JupyterFrontEnd, rendermime: IRenderMimeRegistry) => {
    // ipywidgets registers its renderer in its own plugin: maybe not yet.
    if (!hookWidgetRenderer(rendermime)) {
      void app.started.then(() => hookWidgetRenderer(rendermime));
    }
  }
};
