/**
 * Front end of the similarity explorer widget (anywidget ESM, bundled by esbuild into
 * jupyter_mlx_embed/static/explorer.js). Uses only anywidget's model API (get, set,
 * save_changes, on/off, send and "msg:custom"), so it runs wherever anywidget does:
 * JupyterLab, Notebook 7, VS Code.
 *
 * Python owns the data and the maths; this module draws and reports gestures. Protocol (see
 * jupyter_mlx_embed/widget.py): binary traits `coords` (n x 2 float32), `color_codes` and
 * `scores` (n uint8) and `heatmap` (m x m float32); texts arrive on demand as answers to
 * `{type: "rows", id, indices}` custom messages.
 *
 * Stable hooks for browser tests: input.jme-query, table.jme-topk > tr.jme-hit (first cell:
 * the text), table.jme-neighbors > tr.jme-neighbor, canvas.jme-map, .jme-heatmap,
 * .jme-status, .jme-map-status, select.jme-color, .jme-legend-item, .jme-cluster-toggle.
 * Performance marks: "jme-first-draw" (first map drawn) and "jme-recolor" (each redraw after
 * a query answer or a colour change).
 */

import type { AnyModel, RenderProps } from '@anywidget/types';

import { css, parseColor, similarity } from './colors';
import { float32s, h, placeTooltip, score, shorten } from './dom';
import { HeatmapView } from './heatmap';
import { ClusterLabel, Mode, ScatterMap, cssVar } from './scatter';
import { injectStyle } from './style';

interface Hit {
  index: number;
  text: string;
  score: number;
}

interface Row {
  index: number;
  text: string;
  fields: Record<string, string>;
}

/** The synced traits (see jupyter_mlx_embed/widget.py). */
type State = {
  coords: DataView;
  projection: string;
  map_status: string;
  clusters: ClusterLabel[];
  color_by: string;
  color_options: string[];
  color_kind: string;
  color_codes: DataView;
  color_names: string[];
  color_counts: number[];
  color_palette: string[];
  color_range: number[];
  tooltip_columns: string[];
  embedding_model: string;
  height: number;
  query: string;
  query_seq: number;
  k: number;
  clicked: number;
  selection: number[];
  result_seq: number;
  scores: DataView;
  score_range: number[];
  top_k: Hit[];
  neighbors: Hit[];
  heatmap: DataView;
  heatmap_indices: number[];
  heatmap_labels: string[];
  heatmap_note: string;
  status: string;
  status_level: string;
  view_key: string;
};

const DEBOUNCE_MS = 250;
const SCORE_LEVELS = 256;
const K_CHOICES = [3, 5, 10, 20, 50];
const NARROW_PX = 640;

/** Live views per explorer (its `view_key`: anywidget hands each view its own model object),
 * so that a view can retire the ones it replaces (see retireOlderViews). */
const VIEWS = new Map<string, Set<View>>();

function render({ model, el }: RenderProps<State>): () => void {
  injectStyle(el);
  const root = h('div', 'jme-explorer');
  const cleanups: (() => void)[] = [];
  const on = (event: string, callback: () => void): void => {
    model.on(event, callback);
    cleanups.push(() => model.off(event as `change:${keyof State & string}`, callback));
  };
  const save = (changes: Partial<State>): void => {
    for (const [key, value] of Object.entries(changes)) {
      model.set(key as keyof State, value as never);
    }
    model.save_changes();
  };

  // Layout ------------------------------------------------------------------------------
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
  const colorSelect = h('select', 'jme-color');
  colorSelect.title = 'Colour the points by a column';
  toolbar.append(panButton, lassoButton, boxButton, resetButton, colorSelect, clusterToggle);
  header.append(title, toolbar);

  const body = h('div', 'jme-body');
  const left = h('div', 'jme-left');
  const tip = h('div', 'jme-tip');
  const map = new ScatterMap({
    click: index => save({ clicked: index }),
    select: indices => save({ selection: indices }),
    hover: (index, x, y) => hover(index, x, y),
    drawn: first => {
      performance.mark(first ? 'jme-first-draw' : 'jme-recolor');
      root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
    }
  });
  map.element.append(tip);
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
  left.append(map.element, mapStatus, under, hint);

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
  search.append(queryWrap, kSelect);
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

  const heatmap = new HeatmapView({
    hover: (row, col) => map.setMarks({ pointed: row < 0 ? [] : row === col ? [row] : [row, col] }),
    click: index => save({ clicked: index })
  });
  const status = h('div', 'jme-status');
  status.setAttribute('role', 'status');
  status.setAttribute('aria-live', 'polite');
  root.append(header, body, heatmap.element, status);
  el.replaceChildren(root);

  // Rows (texts and tooltip fields) on demand ---------------------------------------------
  const rows = new Map<number, Row>();
  const waiting = new Map<number, (rows: Row[]) => void>();
  let nextRequest = 1;
  function fetchRows(indices: number[]): Promise<Row[]> {
    const missing = indices.filter(i => !rows.has(i));
    if (!missing.length) {
      return Promise.resolve(indices.map(i => rows.get(i)!));
    }
    const id = nextRequest++;
    return new Promise(resolve => {
      waiting.set(id, () => resolve(indices.filter(i => rows.has(i)).map(i => rows.get(i)!)));
      model.send({ type: 'rows', id, indices: missing });
    });
  }
  const onMessage = (message: unknown): void => {
    const content = message as { type?: string; id?: number; rows?: Row[] };
    if (content?.type !== 'rows' || content.id === undefined) {
      return;
    }
    for (const row of content.rows ?? []) {
      rows.set(row.index, row);
    }
    waiting.get(content.id)?.(content.rows ?? []);
    waiting.delete(content.id);
  };
  model.on('msg:custom', onMessage);
  cleanups.push(() => model.off('msg:custom', onMessage));

  // State -------------------------------------------------------------------------------
  let n = 0;
  let codes: Uint8Array = new Uint8Array(0);
  let filtered = -1; // the legend category shown alone, or -1
  let hovered = -1;
  let seq = model.get('query_seq') || 0;
  let lastSent = model.get('query') || '';
  let timer: number | undefined;

  function hover(index: number, x: number, y: number): void {
    hovered = index;
    if (index < 0) {
      tip.style.display = 'none';
      return;
    }
    void fetchRows([index]).then(([row]) => {
      if (hovered !== index || !row) {
        return;
      }
      const parts: HTMLElement[] = [h('div', 'jme-tip-text', shorten(row.text, 300))];
      for (const [name, value] of Object.entries(row.fields)) {
        const field = h('div', 'jme-tip-field');
        field.append(h('span', 'jme-tip-name', `${name}: `), document.createTextNode(shorten(value, 80)));
        parts.push(field);
      }
      const extra: string[] = [`#${index}`];
      const names = model.get('color_names') || [];
      if (model.get('color_kind') === 'categorical' && codes.length === n && names[codes[index]] !== undefined) {
        extra.push(`${model.get('color_by')}: ${names[codes[index]]}`);
      }
      const scores = uint8s(model.get('scores'));
      const range = model.get('score_range') || [];
      if (scores.length === n && range.length === 2) {
        extra.push(`similarity ≈ ${score(range[0] + (scores[index] / 254) * (range[1] - range[0]))}`);
      }
      parts.push(h('div', 'jme-tip-meta', extra.join(' · ')));
      tip.replaceChildren(...parts);
      placeTooltip(tip, map.element, x, y);
    });
  }

  function setMode(mode: Mode): void {
    map.setMode(mode);
    panButton.setAttribute('aria-pressed', String(mode === 'pan'));
    lassoButton.setAttribute('aria-pressed', String(mode === 'lasso'));
    boxButton.setAttribute('aria-pressed', String(mode === 'box'));
  }

  function updateMeta(): void {
    meta.textContent = `${n.toLocaleString()} texts · ${model.get('embedding_model')} · ${(
      model.get('projection') || ''
    ).toUpperCase()}`;
  }

  function updateCoords(): void {
    const xy = float32s(model.get('coords'));
    n = Math.floor(xy.length / 2);
    codes = uint8s(model.get('color_codes'));
    map.setPoints(xy);
    updateColors();
    updateScores();
    updateClusters();
    map.setSelection(model.get('selection') || []);
    updateMarks();
    updateMeta();
  }

  function updateColors(): void {
    codes = uint8s(model.get('color_codes'));
    filtered = -1;
    map.setFilter(null);
    map.setColors({ codes: codes.length === n ? codes : new Uint8Array(n), palette: model.get('color_palette') || [] });
    updateLegend();
    updateColorSelect();
  }

  /** The similarity ramp: faded into the background at the low end, in either theme. */
  function scoreRamp(): string[] {
    const background = parseColor(cssVar(root, '--jme-bg', '#ffffff'), [255, 255, 255]);
    return Array.from({ length: SCORE_LEVELS }, (_, i) => css(similarity(Math.min(i, 254) / 254, background)));
  }

  function updateScores(): void {
    const values = uint8s(model.get('scores'));
    map.setScores(values.length === n && n > 0 ? { codes: values, palette: scoreRamp() } : null);
    updateLegend();
  }

  function updateLegend(): void {
    legend.replaceChildren();
    const scores = uint8s(model.get('scores'));
    const range = model.get('score_range') || [];
    if (scores.length === n && n > 0 && range.length === 2) {
      const background = parseColor(cssVar(root, '--jme-bg', '#ffffff'), [255, 255, 255]);
      legend.append(
        h('span', '', 'Similarity to the query'),
        h('span', 'jme-legend-value', score(range[0])),
        ramp([0, 0.25, 0.5, 0.75, 1].map(t => css(similarity(t, background)))),
        h('span', 'jme-legend-value', score(range[1]))
      );
      return;
    }
    const kind = model.get('color_kind');
    const palette = model.get('color_palette') || [];
    if (kind === 'numeric') {
      const [lo, hi] = model.get('color_range') || [0, 0];
      const stops = [0, 0.25, 0.5, 0.75, 1].map(t => palette[Math.round(t * 254)] ?? '#888');
      legend.append(
        h('span', '', model.get('color_by')),
        h('span', 'jme-legend-value', formatNumber(lo)),
        ramp(stops),
        h('span', 'jme-legend-value', formatNumber(hi))
      );
    } else if (kind === 'categorical') {
      const names = model.get('color_names') || [];
      const counts = model.get('color_counts') || [];
      legend.append(h('span', 'jme-legend-title', `${model.get('color_by')}:`));
      names.forEach((name, code) => {
        const item = h('button', 'jme-legend-item');
        item.type = 'button';
        item.dataset.code = String(code);
        item.title = `Show only “${name}” (${counts[code] ?? 0} points); click again to show all`;
        item.setAttribute('aria-pressed', String(filtered === code));
        const swatch = h('span', 'jme-swatch');
        swatch.style.background = palette[code] ?? '#888';
        item.append(
          swatch,
          h('span', '', shorten(name, 32)),
          h('span', 'jme-legend-count', (counts[code] ?? 0).toLocaleString())
        );
        item.addEventListener('click', () => {
          filtered = filtered === code ? -1 : code;
          if (filtered < 0) {
            map.setFilter(null);
          } else {
            const picked: number[] = [];
            for (let i = 0; i < codes.length; i++) {
              if (codes[i] === code) {
                picked.push(i);
              }
            }
            map.setFilter(picked);
          }
          updateLegend();
        });
        legend.append(item);
      });
    }
  }

  function updateColorSelect(): void {
    const options = model.get('color_options') || [];
    const chosen = model.get('color_by') || '';
    colorSelect.style.display = options.length ? '' : 'none';
    colorSelect.replaceChildren(
      ...['', ...options].map(name => {
        const option = h('option', '', name ? `colour: ${name}` : 'colour: none');
        option.value = name;
        option.selected = name === chosen;
        return option;
      })
    );
  }

  function updateClusters(): void {
    const clusters = model.get('clusters') || [];
    map.setClusters(clusters);
    clusterToggle.style.display = clusters.length ? '' : 'none';
  }

  function updateMarks(): void {
    map.setMarks({
      clicked: model.get('clicked'),
      neighbors: (model.get('neighbors') || []).map(hit => hit.index),
      topk: (model.get('top_k') || []).map(hit => hit.index)
    });
  }

  function fillTable(table: HTMLTableElement, hits: Hit[], rowClass: string, empty: string, ranked: boolean): void {
    const tbody = h('tbody');
    if (!hits.length) {
      const row = h('tr', 'jme-empty');
      const cell = h('td', '', empty);
      cell.colSpan = 2;
      row.append(cell);
      tbody.append(row);
    }
    hits.forEach((hit, rank) => {
      const row = h('tr', rowClass);
      row.dataset.index = String(hit.index);
      row.title = `#${hit.index}: ${hit.text}`;
      const textCell = h('td', 'jme-text');
      textCell.append(h('div', 'jme-clamp', hit.text));
      const scoreCell = h('td', 'jme-score');
      if (ranked) {
        scoreCell.append(h('span', 'jme-rank', String(rank + 1)));
      }
      scoreCell.append(document.createTextNode(score(hit.score)));
      const bar = h('div', 'jme-bar');
      const fill = h('span');
      fill.style.width = `${Math.round(Math.max(0, Math.min(1, hit.score)) * 100)}%`;
      bar.append(fill);
      scoreCell.append(bar);
      row.append(textCell, scoreCell);
      row.addEventListener('mouseenter', () => map.setMarks({ pointed: [hit.index] }));
      row.addEventListener('mouseleave', () => map.setMarks({ pointed: [] }));
      row.addEventListener('click', () => save({ clicked: hit.index }));
      tbody.append(row);
    });
    table.replaceChildren(tbody);
  }

  function updateTopk(): void {
    const hasQuery = (model.get('query') || '').trim() !== '';
    fillTable(
      topkTable,
      model.get('top_k') || [],
      'jme-hit',
      hasQuery ? 'No matches yet.' : 'Type a query to rank the texts by meaning.',
      true
    );
    updateMarks();
  }

  function updateNeighbors(): void {
    const clicked = model.get('clicked');
    const valid = clicked >= 0 && clicked < n;
    neighborCaption.textContent = valid ? `of #${clicked}` : '';
    if (valid) {
      void fetchRows([clicked]).then(([row]) => {
        if (row && model.get('clicked') === clicked) {
          neighborCaption.textContent = `of #${clicked}: ${shorten(row.text, 80)}`;
          neighborCaption.title = row.text;
        }
      });
    }
    fillTable(
      neighborTable,
      model.get('neighbors') || [],
      'jme-neighbor',
      'Click a point to list its neighbours.',
      false
    );
    updateMarks();
  }

  function updateSelection(): void {
    const selection = model.get('selection') || [];
    map.setSelection(selection);
    selectionText.textContent = selection.length
      ? `${selection.length.toLocaleString()} selected · explorer.selected()`
      : 'Shift-drag on the map to lasso points';
    clearButton.disabled = !selection.length;
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
    status.textContent = model.get('status') || '';
    status.dataset.level = model.get('status_level') || 'info';
    mapStatus.textContent = model.get('map_status') || '';
  }

  function updateBusy(): void {
    queryWrap.classList.toggle('jme-busy', model.get('query_seq') > model.get('result_seq'));
  }

  function updateQuery(): void {
    const query = model.get('query') || '';
    // Set from Python (e.g. search_text): show it, unless the user is typing here.
    if (document.activeElement !== input && input.value !== query) {
      input.value = query;
    }
    lastSent = query;
  }

  function updateK(): void {
    const k = model.get('k');
    const choices = K_CHOICES.includes(k) ? K_CHOICES : [...K_CHOICES, k].sort((a, b) => a - b);
    kSelect.replaceChildren(
      ...choices.map(choice => {
        const option = h('option', '', `top ${choice}`);
        option.value = String(choice);
        option.selected = choice === k;
        return option;
      })
    );
  }

  function sendQuery(): void {
    window.clearTimeout(timer);
    timer = undefined;
    const text = input.value;
    if (text === lastSent) {
      return;
    }
    lastSent = text;
    seq = Math.max(seq, model.get('query_seq') || 0) + 1;
    save({ query: text, query_seq: seq });
    updateBusy();
  }

  // Events ------------------------------------------------------------------------------
  input.value = lastSent;
  input.addEventListener('input', () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(sendQuery, DEBOUNCE_MS);
  });
  input.addEventListener('keydown', e => {
    if (e.key === 'Enter') {
      sendQuery();
    } else if (e.key === 'Escape') {
      input.value = '';
      sendQuery();
    }
    // Keep JupyterLab's notebook shortcuts (e.g. "a", "b", "d d") out of the text box.
    e.stopPropagation();
  });
  kSelect.addEventListener('change', () => save({ k: Number(kSelect.value) }));
  colorSelect.addEventListener('change', () => save({ color_by: colorSelect.value }));
  clusterBox.addEventListener('change', () => map.setClustersVisible(clusterBox.checked));
  panButton.addEventListener('click', () => setMode('pan'));
  lassoButton.addEventListener('click', () => setMode('lasso'));
  boxButton.addEventListener('click', () => setMode('box'));
  resetButton.addEventListener('click', () => map.resetView());
  clearButton.addEventListener('click', () => save({ selection: [] }));

  on('change:coords', updateCoords);
  on('change:color_codes', updateColors);
  on('change:color_palette', updateColors);
  on('change:color_names', updateLegend);
  on('change:color_by', updateColorSelect);
  on('change:color_options', updateColorSelect);
  on('change:clusters', updateClusters);
  on('change:projection', updateMeta);
  on('change:embedding_model', updateMeta);
  on('change:map_status', updateStatus);
  on('change:height', () => map.setHeight(model.get('height')));
  on('change:scores', updateScores);
  on('change:top_k', updateTopk);
  on('change:neighbors', updateNeighbors);
  on('change:clicked', updateNeighbors);
  on('change:selection', updateSelection);
  on('change:heatmap', updateHeatmap);
  on('change:heatmap_indices', updateHeatmap);
  on('change:heatmap_labels', updateHeatmap);
  on('change:heatmap_note', updateHeatmap);
  on('change:status', updateStatus);
  on('change:status_level', updateStatus);
  on('change:query', () => {
    updateQuery();
    updateTopk();
  });
  on('change:query_seq', updateBusy);
  on('change:result_seq', updateBusy);
  on('change:k', updateK);

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

  setMode('pan');
  map.setHeight(model.get('height'));
  updateCoords();
  updateTopk();
  updateNeighbors();
  updateSelection();
  updateHeatmap();
  updateStatus();
  updateBusy();
  updateK();

  let retired = false;
  const retire = (): void => {
    if (retired) {
      return;
    }
    retired = true;
    window.clearTimeout(timer);
    for (const cleanup of cleanups) {
      cleanup();
    }
    sizeObserver.disconnect();
    themeObserver.disconnect();
    map.destroy();
    heatmap.destroy();
    views.delete(view);
    if (!views.size) {
      VIEWS.delete(model.get('view_key'));
    }
  };
  const views = viewsOf(model);
  const view: View = { el, retire };
  views.add(view);
  retireOlderViews(view, views);
  return retire;
}

/** A view of a model on the page. */
interface View {
  el: HTMLElement;
  retire: () => void;
}

function viewsOf(model: AnyModel<State>): Set<View> {
  const key = model.get('view_key');
  let views = VIEWS.get(key);
  if (!views) {
    views = new Set();
    VIEWS.set(key, views);
  }
  return views;
}

/** The output-area node a view is shown in (JupyterLab, Notebook 7), if any. */
const OUTPUT = '.jp-OutputArea-output';

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
        other.retire();
        other.el.style.display = 'none';
      }
    }
  };
  requestAnimationFrame(check);
}

function button(label: string, className: string, title: string): HTMLButtonElement {
  const node = h('button', `jme-button ${className}`, label);
  node.type = 'button';
  node.title = title;
  return node;
}

function key(className: string, label: string): HTMLSpanElement {
  const item = h('span', 'jme-key');
  item.append(h('span', `jme-key-mark ${className}`), document.createTextNode(label));
  return item;
}

function ramp(stops: string[]): HTMLSpanElement {
  const bar = h('span', 'jme-ramp');
  bar.style.background = `linear-gradient(to right, ${stops.join(', ')})`;
  return bar;
}

function formatNumber(value: number): string {
  return Math.abs(value) >= 1e5 || (value !== 0 && Math.abs(value) < 1e-3)
    ? value.toExponential(2)
    : String(Math.round(value * 1000) / 1000);
}

/** A uint8 binary trait as a Uint8Array (no copy). */
function uint8s(value: unknown): Uint8Array {
  if (value instanceof DataView || ArrayBuffer.isView(value)) {
    const view = value as ArrayBufferView;
    return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  }
  if (value instanceof ArrayBuffer) {
    return new Uint8Array(value);
  }
  return new Uint8Array(0);
}

export default { render };
