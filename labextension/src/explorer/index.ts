/**
 * Front end of the similarity explorer widget (anywidget ESM, bundled by esbuild into
 * jupyter_mlx_embed/static/explorer.js). Uses only anywidget's model API (get, set,
 * save_changes, on/off, send and "msg:custom"), so it runs wherever anywidget does:
 * JupyterLab, Notebook 7, VS Code.
 *
 * Python owns the data and the maths; this module wires the views to the synced state
 * (protocol.ts): the map (scatter.ts), legend, toolbar, search box, tables, tooltip and
 * heatmap, each in its own module; layout.ts lists the stable hooks for browser tests.
 * Performance marks: "jme-first-draw" (first map drawn) and "jme-recolor" (each redraw after
 * a query answer or a colour change).
 */

import type { RenderProps } from '@anywidget/types';

import { float32s, uint8s } from './buffers';
import { FilterBar } from './filterbar';
import { similarityRamp } from './colors';
import type { Explorer } from './context';
import { h } from './dom';
import { HeatmapView } from './heatmap';
import { buildLayout } from './layout';
import { Legend, background } from './legend';
import { ExplorerState, SyncedModel } from './protocol';
import { StaticExport, staticModel } from './static';
import { RowCache } from './rows';
import { ScatterMap } from './scatter';
import { SearchBox } from './search';
import type { SearchState } from './search';
import { injectStyle } from './style';
import { HitTables } from './tables';
import { Toolbar } from './toolbar';
import { PictureLayer } from './pictures';
import { ThumbnailCache } from './thumbnails';
import { PointTooltip } from './tooltip';
import { registerView } from './views';

const SCORE_LEVELS = 256;
/**
 * Below this width the side panel goes under the map: beside it (up to 330 px with its gap)
 * the map would be narrower than about 470 px, too small for its clusters and labels.
 */
const NARROW_PX = 840;

function render({ model: anyModel, el }: RenderProps<ExplorerState>): () => void {
  injectStyle(el);
  const model = new SyncedModel(anyModel);
  const root = h('div', 'jme-explorer');
  // An exported page (to_html): no kernel, so nothing that needs Python is shown.
  root.classList.toggle('jme-static', model.get('interactive') === false);
  const rows = new RowCache(request => model.send(request));
  const thumbnails = model.get('pictures')
    ? new ThumbnailCache(request => model.send(request), {
        create: bytes => URL.createObjectURL(new Blob([bytes.slice()], { type: 'image/jpeg' })),
        release: url => URL.revokeObjectURL(url)
      })
    : null;
  model.onMessage((message, buffers) => {
    rows.receive(message);
    thumbnails?.receive(message, buffers);
  });
  let pictureLayer: PictureLayer | null = null;
  const points: Explorer['points'] = { n: 0, codes: new Uint8Array(0) };
  const map = new ScatterMap({
    click: index => model.save({ clicked: index }),
    select: indices => model.save({ selection: indices }),
    hover: (index, x, y) => tooltip.show(index, x, y),
    drawn: first => {
      performance.mark(first ? 'jme-first-draw' : 'jme-recolor');
      root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
    },
    viewChanged: () => {
      tooltip.show(-1, 0, 0); // the point moved from under the pointer
      pictureLayer?.viewChanged();
    }
  });
  pictureLayer = thumbnails ? new PictureLayer(map, thumbnails) : null;
  const heatmap = new HeatmapView({
    hover: (row, col) => map.setMarks({ pointed: row < 0 ? [] : row === col ? [row] : [row, col] }),
    click: index => model.save({ clicked: index })
  });
  const layout = buildLayout(root, map.element, heatmap.element);
  el.replaceChildren(root);

  const explorer: Explorer = { model, rows, map, points, thumbnails };
  const tooltip = new PointTooltip(explorer, layout.tip);
  const legend = new Legend(explorer, layout.legend, root);
  const toolbar = new Toolbar(explorer, layout);
  const filterBar = new FilterBar(model);
  layout.filterRow.append(filterBar.element);
  const tables = new HitTables(explorer, layout.topkTable, layout.neighborCaption, layout.neighborTable);
  const search = new SearchBox(
    model,
    layout.input,
    layout.queryWrap,
    layout.kSelect,
    layout.rerankLabel,
    layout.rerankToggle
  );

  function updateMeta(): void {
    const noun = thumbnails ? 'pictures' : 'texts';
    layout.meta.textContent = `${points.n.toLocaleString()} ${noun} · ${model.get('embedding_model')} · ${(
      model.get('projection') || ''
    ).toUpperCase()}`;
  }

  function updateCoords(): void {
    const xy = float32s(model.get('coords'));
    points.n = Math.floor(xy.length / 2);
    points.codes = uint8s(model.get('color_codes'));
    map.setPoints(xy);
    updateColors();
    updateScores();
    toolbar.updateClusters();
    toolbar.updateDensity();
    toolbar.updateScale();
    map.setSelection(model.get('selection') || []);
    updateFilter();
    updateMarks();
    updateMeta();
  }

  function updateColors(): void {
    const { n } = points;
    points.codes = uint8s(model.get('color_codes'));
    legend.resetFilter();
    map.setColors({
      codes: points.codes.length === n ? points.codes : new Uint8Array(n),
      palette: model.get('color_palette') || []
    });
    legend.update();
    toolbar.updateColorSelect();
  }

  /** Points coloured by similarity (faded into the background at the low end) while a query has scores. */
  function updateScores(): void {
    const values = uint8s(model.get('scores'));
    const { n } = points;
    map.setScores(
      values.length === n && n > 0 ? { codes: values, palette: similarityRamp(background(root), SCORE_LEVELS) } : null
    );
    legend.update();
  }

  /** The filter's matches: the others greyed out. */
  function updateFilter(): void {
    const mask = uint8s(model.get('filter_mask'));
    map.setDimmed(mask.length === points.n && points.n > 0 ? mask : null);
    filterBar.update();
  }

  function updateMarks(): void {
    map.setMarks({
      clicked: model.get('clicked'),
      neighbors: (model.get('neighbors') || []).map(hit => hit.index),
      topk: (model.get('top_k') || []).map(hit => hit.index)
    });
  }

  function updateTopk(): void {
    tables.updateTopk();
    updateMarks();
  }

  function updateNeighbors(): void {
    tables.updateNeighbors();
    updateMarks();
  }

  function updateSelection(): void {
    const selection = model.get('selection') || [];
    map.setSelection(selection);
    layout.selectionText.textContent = selection.length
      ? `${selection.length.toLocaleString()} selected · explorer.selected()`
      : 'Shift-drag on the map to lasso points';
    layout.clearButton.disabled = !selection.length;
  }

  function updateHeatmap(): void {
    heatmap.setData(
      float32s(model.get('heatmap')),
      model.get('heatmap_indices') || [],
      model.get('heatmap_labels') || [],
      model.get('heatmap_note') || ''
    );
  }

  function updateStatus(): void {
    layout.status.textContent = model.get('status') || '';
    layout.status.dataset.level = model.get('status_level') || 'info';
    layout.mapStatus.textContent = model.get('map_status') || '';
  }

  layout.clearButton.addEventListener('click', () => model.save({ selection: [] }));

  model.onChange('coords', updateCoords);
  model.onChange('color_codes', updateColors);
  model.onChange('color_palette', updateColors);
  model.onChange('color_names', () => legend.update());
  model.onChange('color_by', () => toolbar.updateColorSelect());
  model.onChange('color_options', () => toolbar.updateColorSelect());
  model.onChange('clusters', () => toolbar.updateClusters());
  model.onChange('density', () => toolbar.updateDensity());
  for (const name of ['size_by', 'opacity_by', 'size_options', 'scale_codes'] as const) {
    model.onChange(name, () => toolbar.updateScale());
  }
  model.onChange('contours', () => toolbar.updateDensity());
  model.onChange('projection', updateMeta);
  model.onChange('embedding_model', updateMeta);
  model.onChange('map_status', updateStatus);
  model.onChange('height', () => map.setHeight(model.get('height')));
  model.onChange('scores', updateScores);
  model.onChange('top_k', updateTopk);
  model.onChange('neighbors', updateNeighbors);
  model.onChange('clicked', updateNeighbors);
  model.onChange('selection', updateSelection);
  model.onChange('heatmap', updateHeatmap);
  model.onChange('heatmap_indices', updateHeatmap);
  model.onChange('heatmap_labels', updateHeatmap);
  model.onChange('heatmap_note', updateHeatmap);
  model.onChange('filter_mask', updateFilter);
  model.onChange('filter_count', () => filterBar.update());
  model.onChange('filter_text', () => filterBar.update());
  model.onChange('keyword', () => filterBar.update());
  model.onChange('search_filtered', () => filterBar.update());
  model.onChange('value_range', () => legend.update());
  model.onChange('status', updateStatus);
  model.onChange('status_level', updateStatus);
  model.onChange('query', () => {
    search.updateQuery();
    updateTopk();
  });
  model.onChange('query_seq', () => search.updateBusy());
  model.onChange('result_seq', () => search.updateBusy());
  model.onChange('k', () => search.updateK());
  model.onChange('reranker', () => search.updateRerank());
  model.onChange('rerank', () => search.updateRerank());

  // Narrow outputs (side panels, small windows): one column.
  const sizeObserver = new ResizeObserver(() => {
    root.classList.toggle('jme-narrow', root.clientWidth < NARROW_PX);
  });
  sizeObserver.observe(root);
  // Theme switches change the background the similarity colours fade into.
  const themeObserver = new MutationObserver(() => {
    updateScores();
    heatmap.refresh();
  });
  themeObserver.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-light', 'class'] });

  toolbar.setMode('pan');
  map.setHeight(model.get('height'));
  updateCoords();
  updateTopk();
  updateNeighbors();
  updateSelection();
  updateHeatmap();
  updateStatus();
  search.updateBusy();
  search.updateK();
  search.updateRerank();

  let retired = false;
  const retire = (): void => {
    if (retired) {
      return;
    }
    retired = true;
    search.destroy();
    filterBar.destroy();
    model.dispose();
    sizeObserver.disconnect();
    themeObserver.disconnect();
    pictureLayer?.destroy();
    thumbnails?.dispose();
    map.destroy();
    heatmap.destroy();
    unregister(model.get('view_key'));
  };
  const unregister = registerView(model.get('view_key'), {
    el,
    retire,
    handOver: () => search.handOver(),
    takeOver: state => search.takeOver(state as SearchState)
  });
  return retire;
}

/** Renders an exported explorer (`to_html`'s page) into `el`: no kernel behind it. */
export function renderStatic(el: HTMLElement, data: StaticExport): () => void {
  return render({ model: staticModel(data), el } as RenderProps<ExplorerState>);
}

export default { render };
