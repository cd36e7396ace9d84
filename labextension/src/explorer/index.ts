/**
 * Front end of the similarity explorer widget (anywidget ESM, bundled by esbuild into
 * jupyter_mlx_embed/static/explorer.js).
 *
 * Python owns the data and the maths; this module draws and reports gestures. Protocol:
 * binary traits `coords` (n x 2 float32), `label_codes` (n int32), `scores` (n float32) and
 * `heatmap` (m x m float32); the front end sets `query` + `query_seq` (each debounced edit
 * takes the next number), `k`, `clicked` and `selection`; Python answers with `result_seq`,
 * `scores`, `top_k`, `neighbors`, the heatmap traits and `status` / `status_level`.
 *
 * Stable hooks for browser tests: input.jme-query, table.jme-topk > tr.jme-hit (first cell:
 * the text), table.jme-neighbors > tr.jme-neighbor, canvas.jme-map, .jme-heatmap,
 * .jme-status.
 */

import type { RenderProps } from '@anywidget/types';

import { DEFAULT_POINT, categorical, css, similarity } from './colors';
import { float32s, h, int32s, score, shorten } from './dom';
import { HeatmapView } from './heatmap';
import { Mode, ScatterMap } from './map';
import { injectStyle } from './style';

interface Hit {
  index: number;
  text: string;
  score: number;
}

/** The synced traits (see jupyter_mlx_embed/widget.py). */
type State = {
  coords: DataView;
  texts: string[];
  label_codes: DataView;
  label_names: string[];
  projection: string;
  embedding_model: string;
  height: number;
  query: string;
  query_seq: number;
  k: number;
  clicked: number;
  selection: number[];
  result_seq: number;
  scores: DataView;
  top_k: Hit[];
  neighbors: Hit[];
  heatmap: DataView;
  heatmap_indices: number[];
  heatmap_note: string;
  status: string;
  status_level: string;
};

const DEBOUNCE_MS = 250;
const SCORE_BUCKETS = 48;
const K_CHOICES = [3, 5, 10, 20, 50];
const NARROW_PX = 640;

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
  const panButton = button('Pan', 'jme-mode-pan', 'Drag to pan (shift-drag selects)');
  const selectButton = button('Select', 'jme-mode-select', 'Drag to select a box of points');
  const resetButton = button('Reset view', 'jme-reset', 'Fit all points (or double-click the map)');
  toolbar.append(panButton, selectButton, resetButton);
  header.append(title, toolbar);

  const body = h('div', 'jme-body');
  const left = h('div', 'jme-left');
  const map = new ScatterMap({
    click: index => save({ clicked: index }),
    select: indices => save({ selection: indices })
  });
  const under = h('div', 'jme-under-map');
  const legend = h('div', 'jme-legend');
  const hint = h('span', 'jme-hint', 'Drag: pan · wheel: zoom · shift-drag: select · double-click: reset');
  under.append(legend, hint);
  left.append(map.element, under);

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
    hover: (row, col) => map.setEmphasis({ pointed: row < 0 ? [] : row === col ? [row] : [row, col] }),
    click: index => save({ clicked: index })
  });
  const status = h('div', 'jme-status');
  status.setAttribute('role', 'status');
  status.setAttribute('aria-live', 'polite');
  root.append(header, body, heatmap.element, status);
  el.replaceChildren(root);

  // State -------------------------------------------------------------------------------
  let n = 0;
  let codes: Int32Array = new Int32Array(0);
  let scores: Float32Array | null = null;
  let seq = model.get('query_seq') || 0;
  let lastSent = model.get('query') || '';
  let timer: number | undefined;

  const texts = (): string[] => model.get('texts') || [];
  const names = (): string[] => model.get('label_names') || [];
  const hasLabels = (): boolean => codes.length === n && names().length > 0;

  map.describe = index => ({
    text: texts()[index] ?? '',
    label: hasLabels() ? names()[codes[index]] : undefined,
    color: hasLabels() ? categorical(codes[index]) : undefined,
    score: scores ? scores[index] : undefined
  });

  function setMode(mode: Mode): void {
    map.setMode(mode);
    panButton.setAttribute('aria-pressed', String(mode === 'pan'));
    selectButton.setAttribute('aria-pressed', String(mode === 'select'));
  }

  function updateMeta(): void {
    const count = texts().length;
    meta.textContent = `${count.toLocaleString()} texts · ${model.get('embedding_model')} · ${(
      model.get('projection') || ''
    ).toUpperCase()}`;
  }

  function updateCoords(): void {
    const xy = float32s(model.get('coords'));
    n = Math.floor(xy.length / 2);
    map.setData(xy);
    codes = int32s(model.get('label_codes'));
    updateScores();
    map.setSelection(model.get('selection') || []);
    updateEmphasis();
  }

  /** Colours: similarity to the query when there is one, else labels. */
  function recolor(): void {
    legend.replaceChildren();
    if (scores) {
      let lo = Infinity;
      let hi = -Infinity;
      for (const s of scores) {
        lo = Math.min(lo, s);
        hi = Math.max(hi, s);
      }
      const span = hi - lo || 1;
      const background = map.background();
      const group = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        group[i] = Math.min(SCORE_BUCKETS - 1, Math.floor(((scores[i] - lo) / span) * SCORE_BUCKETS));
      }
      const palette: string[] = [];
      for (let b = 0; b < SCORE_BUCKETS; b++) {
        palette.push(css(similarity((b + 0.5) / SCORE_BUCKETS, background)));
      }
      map.setGroups(group, palette);
      const ramp = h('span', 'jme-ramp');
      const stops = [0, 0.25, 0.5, 0.75, 1].map(t => css(similarity(t, background)));
      ramp.style.background = `linear-gradient(to right, ${stops.join(', ')})`;
      legend.append(
        h('span', '', 'Similarity to the query'),
        h('span', 'jme-legend-value', score(lo)),
        ramp,
        h('span', 'jme-legend-value', score(hi))
      );
    } else if (hasLabels()) {
      const labelNames = names();
      map.setGroups(
        codes,
        labelNames.map((_, i) => categorical(i))
      );
      const counts = new Array<number>(labelNames.length).fill(0);
      for (const c of codes) {
        if (c >= 0 && c < counts.length) {
          counts[c]++;
        }
      }
      labelNames.forEach((name, code) => {
        const item = h('button', 'jme-legend-item');
        item.type = 'button';
        item.title = `Select the ${counts[code]} points labelled “${name}”`;
        const swatch = h('span', 'jme-swatch');
        swatch.style.background = categorical(code);
        item.append(swatch, h('span', '', shorten(name, 40)), h('span', 'jme-legend-count', String(counts[code])));
        item.addEventListener('click', () => {
          const picked: number[] = [];
          codes.forEach((c, i) => {
            if (c === code) {
              picked.push(i);
            }
          });
          save({ selection: picked });
        });
        legend.append(item);
      });
    } else {
      map.setGroups(new Uint8Array(n), [DEFAULT_POINT]);
    }
  }

  function updateScores(): void {
    const values = float32s(model.get('scores'));
    scores = values.length === n && n > 0 ? values : null;
    recolor();
  }

  function updateEmphasis(): void {
    map.setEmphasis({
      clicked: model.get('clicked'),
      neighbors: (model.get('neighbors') || []).map(hit => hit.index),
      topk: (model.get('top_k') || []).map(hit => hit.index)
    });
  }

  function fillTable(table: HTMLTableElement, hits: Hit[], rowClass: string, empty: string): void {
    const tbody = h('tbody');
    if (!hits.length) {
      const row = h('tr', 'jme-empty');
      const cell = h('td', '', empty);
      cell.colSpan = 2;
      row.append(cell);
      tbody.append(row);
    }
    for (const hit of hits) {
      const row = h('tr', rowClass);
      row.dataset.index = String(hit.index);
      row.title = `#${hit.index}: ${hit.text}`;
      const textCell = h('td', 'jme-text');
      textCell.append(h('div', 'jme-clamp', hit.text));
      const scoreCell = h('td', 'jme-score', score(hit.score));
      const bar = h('div', 'jme-bar');
      const fill = h('span');
      fill.style.width = `${Math.round(Math.max(0, Math.min(1, hit.score)) * 100)}%`;
      bar.append(fill);
      scoreCell.append(bar);
      row.append(textCell, scoreCell);
      row.addEventListener('mouseenter', () => map.setEmphasis({ pointed: [hit.index] }));
      row.addEventListener('mouseleave', () => map.setEmphasis({ pointed: [] }));
      row.addEventListener('click', () => save({ clicked: hit.index }));
      tbody.append(row);
    }
    table.replaceChildren(tbody);
  }

  function updateTopk(): void {
    const hasQuery = (model.get('query') || '').trim() !== '';
    fillTable(
      topkTable,
      model.get('top_k') || [],
      'jme-hit',
      hasQuery ? 'No matches yet.' : 'Type a query to rank the texts by meaning.'
    );
    updateEmphasis();
  }

  function updateNeighbors(): void {
    const clicked = model.get('clicked');
    const valid = clicked >= 0 && clicked < n;
    neighborCaption.textContent = valid ? `of #${clicked}: ${shorten(texts()[clicked] ?? '', 80)}` : '';
    neighborCaption.title = valid ? (texts()[clicked] ?? '') : '';
    fillTable(neighborTable, model.get('neighbors') || [], 'jme-neighbor', 'Click a point to list its neighbours.');
    updateEmphasis();
  }

  function updateSelection(): void {
    const selection = model.get('selection') || [];
    map.setSelection(selection);
    selectionText.textContent = selection.length
      ? `${selection.length.toLocaleString()} selected · explorer.selected()`
      : 'Shift-drag on the map to select points';
    clearButton.disabled = !selection.length;
  }

  function updateHeatmap(): void {
    heatmap.setData(
      float32s(model.get('heatmap')),
      model.get('heatmap_indices') || [],
      texts(),
      model.get('heatmap_note') || ''
    );
  }

  function updateStatus(): void {
    status.textContent = model.get('status') || '';
    status.dataset.level = model.get('status_level') || 'info';
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
  panButton.addEventListener('click', () => setMode('pan'));
  selectButton.addEventListener('click', () => setMode('select'));
  resetButton.addEventListener('click', () => map.resetView());
  clearButton.addEventListener('click', () => save({ selection: [] }));

  on('change:coords', () => {
    updateCoords();
    updateMeta();
  });
  on('change:label_codes', updateCoords);
  on('change:label_names', recolor);
  on('change:texts', () => {
    updateMeta();
    updateHeatmap();
  });
  on('change:projection', updateMeta);
  on('change:embedding_model', updateMeta);
  on('change:height', () => map.setHeight(model.get('height')));
  on('change:scores', updateScores);
  on('change:top_k', updateTopk);
  on('change:neighbors', updateNeighbors);
  on('change:clicked', updateNeighbors);
  on('change:selection', updateSelection);
  on('change:heatmap', updateHeatmap);
  on('change:heatmap_indices', updateHeatmap);
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
    recolor();
    heatmap.refresh();
  });
  themeObserver.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-light', 'class'] });

  setMode('pan');
  map.setHeight(model.get('height'));
  updateMeta();
  updateCoords();
  updateTopk();
  updateNeighbors();
  updateSelection();
  updateHeatmap();
  updateStatus();
  updateBusy();
  updateK();

  return () => {
    window.clearTimeout(timer);
    for (const cleanup of cleanups) {
      cleanup();
    }
    sizeObserver.disconnect();
    themeObserver.disconnect();
    map.destroy();
    heatmap.destroy();
  };
}

function button(label: string, className: string, title: string): HTMLButtonElement {
  const node = h('button', `jme-button ${className}`, label);
  node.type = 'button';
  node.title = title;
  return node;
}

export default { render };
