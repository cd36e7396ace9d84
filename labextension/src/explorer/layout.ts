/**
 * The explorer's DOM: header and toolbar, the map with its legend and keys, the search side
 * panel with its tables, the heatmap and the status line. Builds the elements only; the
 * other modules fill them and listen to them.
 *
 * Stable hooks for browser tests: input.jme-query, table.jme-topk > tr.jme-hit (first cell:
 * the text), table.jme-neighbors > tr.jme-neighbor, canvas.jme-map, .jme-heatmap,
 * .jme-status, .jme-map-status, select.jme-color, .jme-legend-item, .jme-cluster-toggle,
 * .jme-filter-row (the filter bar's hooks: filterbar.ts), input.jme-range-lo / -hi (a numeric
 * colour's range, legend.ts).
 */

import { button, h } from './dom';

/** The elements the explorer's views fill or listen to. */
export interface Layout {
  root: HTMLDivElement;
  /** After the title: texts, model, projection. */
  meta: HTMLSpanElement;
  panButton: HTMLButtonElement;
  lassoButton: HTMLButtonElement;
  boxButton: HTMLButtonElement;
  resetButton: HTMLButtonElement;
  colorSelect: HTMLSelectElement;
  /** Point sizes by a numeric column (hook: select.jme-size). */
  sizeSelect: HTMLSelectElement;
  /** Point opacity by a numeric column (hook: select.jme-opacity). */
  opacitySelect: HTMLSelectElement;
  /** Under the header: the filter bar goes here. */
  filterRow: HTMLDivElement;
  clusterToggle: HTMLLabelElement;
  clusterBox: HTMLInputElement;
  /** The density contours switch (hook: .jme-density-toggle input). */
  densityBox: HTMLInputElement;
  /** The map's hover tooltip (inside the map box). */
  tip: HTMLDivElement;
  mapStatus: HTMLDivElement;
  legend: HTMLDivElement;
  queryWrap: HTMLDivElement;
  /** The reranker switch (hook: input.jme-rerank), shown when the explorer has a reranker. */
  rerankLabel: HTMLLabelElement;
  rerankToggle: HTMLInputElement;
  input: HTMLInputElement;
  kSelect: HTMLSelectElement;
  topkTable: HTMLTableElement;
  neighborCaption: HTMLDivElement;
  neighborTable: HTMLTableElement;
  selectionText: HTMLSpanElement;
  clearButton: HTMLButtonElement;
  status: HTMLDivElement;
}

/** Builds the explorer in `root` around the map box and the heatmap view. */
export function buildLayout(root: HTMLDivElement, mapBox: HTMLElement, heatmap: HTMLElement): Layout {
  const header = h('div', 'jme-header');
  const title = h('div', 'jme-title', 'Similarity explorer');
  const meta = h('span', 'jme-meta');
  title.append(meta);
  const toolbar = h('div', 'jme-toolbar');
  const panButton = button('Pan', 'jme-mode-pan', 'Drag to pan; shift-drag to lasso');
  const lassoButton = button('Lasso', 'jme-mode-lasso', 'Drag to draw a lasso around points');
  const boxButton = button('Box', 'jme-mode-box', 'Drag to select a box of points');
  const resetButton = button('Reset view', 'jme-reset', 'Fit all points (or double-click the map)');
  const clusterToggle = h('label', 'jme-cluster-toggle');
  const clusterBox = h('input');
  clusterBox.type = 'checkbox';
  clusterBox.checked = true;
  clusterToggle.append(clusterBox, document.createTextNode(' cluster labels'));
  const densityToggle = h('label', 'jme-density-toggle');
  densityToggle.title = 'Draw density contours (per category when coloured by one)';
  const densityBox = h('input');
  densityBox.type = 'checkbox';
  densityToggle.append(densityBox, document.createTextNode(' density'));
  const colorSelect = h('select', 'jme-color');
  colorSelect.title = 'Colour the points by a column';
  const sizeSelect = h('select', 'jme-size');
  sizeSelect.title = 'Size the points by a numeric column';
  const opacitySelect = h('select', 'jme-opacity');
  opacitySelect.title = 'Fade the points by a numeric column (the smallest values faintest)';
  toolbar.append(
    panButton,
    lassoButton,
    boxButton,
    resetButton,
    colorSelect,
    sizeSelect,
    opacitySelect,
    clusterToggle,
    densityToggle
  );
  header.append(title, toolbar);
  const filterRow = h('div', 'jme-filter-row');

  const body = h('div', 'jme-body');
  const left = h('div', 'jme-left');
  const tip = h('div', 'jme-tip');
  mapBox.append(tip);
  const mapStatus = h('div', 'jme-map-status');
  const under = h('div', 'jme-under-map');
  const legend = h('div', 'jme-legend');
  const keys = h('div', 'jme-keys');
  keys.append(
    key('jme-key-hit', 'query match (rank)'),
    key('jme-key-neighbor', 'neighbour'),
    key('jme-key-clicked', 'clicked point'),
    key('jme-key-selected', 'selected')
  );
  under.append(legend, keys);
  const hint = h(
    'div',
    'jme-hint',
    'Drag: pan · ctrl-scroll (or click, then scroll): zoom · shift-drag: lasso · double-click: reset'
  );
  left.append(mapBox, mapStatus, under, hint);

  const side = h('div', 'jme-side');
  const search = h('div', 'jme-search');
  const queryWrap = h('div', 'jme-query-wrap');
  const input = h('input', 'jme-query');
  input.type = 'text';
  input.placeholder = 'Search by meaning…';
  input.setAttribute('aria-label', 'Query');
  input.spellcheck = false;
  queryWrap.append(input, h('span', 'jme-spinner'));
  const kSelect = h('select', 'jme-k');
  kSelect.title = 'Number of matches and neighbours';
  const rerankLabel = h('label', 'jme-rerank-label');
  const rerankToggle = h('input', 'jme-rerank');
  rerankToggle.type = 'checkbox';
  rerankLabel.append(rerankToggle, document.createTextNode('rerank'));
  search.append(queryWrap, kSelect, rerankLabel);
  const topkHead = h('div', 'jme-section', 'Best matches');
  const topkTable = h('table', 'jme-table jme-topk');
  const neighborHead = h('div', 'jme-section', 'Nearest neighbours');
  const neighborCaption = h('div', 'jme-caption');
  const neighborTable = h('table', 'jme-table jme-neighbors');
  const selectionBar = h('div', 'jme-selection');
  const selectionText = h('span', 'jme-selection-count');
  const clearButton = button('Clear', 'jme-clear', 'Deselect all points');
  selectionBar.append(selectionText, clearButton);
  side.append(search, topkHead, topkTable, neighborHead, neighborCaption, neighborTable, selectionBar);
  body.append(left, side);

  const status = h('div', 'jme-status');
  status.setAttribute('role', 'status');
  status.setAttribute('aria-live', 'polite');
  root.append(header, filterRow, body, heatmap, status);
  return {
    root,
    meta,
    panButton,
    lassoButton,
    boxButton,
    resetButton,
    colorSelect,
    sizeSelect,
    opacitySelect,
    filterRow,
    clusterToggle,
    clusterBox,
    densityBox,
    tip,
    mapStatus,
    legend,
    queryWrap,
    input,
    kSelect,
    rerankLabel,
    rerankToggle,
    topkTable,
    neighborCaption,
    neighborTable,
    selectionText,
    clearButton,
    status
  };
}

/** An entry of the map's key: a mark and what it means. */
function key(className: string, label: string): HTMLSpanElement {
  const item = h('span', 'jme-key');
  item.append(h('span', `jme-key-mark ${className}`), document.createTextNode(label));
  return item;
}
