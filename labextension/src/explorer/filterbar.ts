/**
 * The filter bar under the toolbar: a keyword box (hook: input.jme-keyword; a substring, or
 * /a regular expression/), the filter set from Python with a button that clears it
 * (.jme-filter-chip), the number of matches (.jme-filter-count) and a switch that limits the
 * query's ranking to them (input.jme-search-filtered). Python computes the matches; points
 * that do not match are greyed out on the map.
 */

import { button, h } from './dom';
import type { SyncedModel } from './protocol';

const DEBOUNCE_MS = 300;

export class FilterBar {
  readonly element: HTMLDivElement;
  private readonly model: SyncedModel;
  private readonly input: HTMLInputElement;
  private readonly chip: HTMLSpanElement;
  private readonly chipText: HTMLSpanElement;
  private readonly countText: HTMLSpanElement;
  private readonly scope: HTMLLabelElement;
  private readonly scopeBox: HTMLInputElement;
  private timer: number | undefined;

  constructor(model: SyncedModel) {
    this.model = model;
    this.element = h('div', 'jme-filter-bar');
    this.input = h('input', 'jme-keyword');
    this.input.type = 'search';
    this.input.placeholder = 'Filter: a word or /regex/';
    this.input.setAttribute('aria-label', 'Filter the texts');
    this.input.spellcheck = false;
    this.input.value = model.get('keyword') || '';
    this.chip = h('span', 'jme-filter-chip');
    this.chipText = h('span', 'jme-filter-expr');
    const clear = button('×', 'jme-filter-clear', 'Clear the filter set from Python');
    clear.addEventListener('click', () => model.save({ filter_text: '' }));
    this.chip.append(this.chipText, clear);
    this.countText = h('span', 'jme-filter-count');
    this.scope = h('label', 'jme-search-filtered-label');
    this.scopeBox = h('input', 'jme-search-filtered');
    this.scopeBox.type = 'checkbox';
    this.scope.append(this.scopeBox, document.createTextNode('search only these'));
    this.scope.title = 'Rank the query’s best matches among the matching points only';
    this.element.append(this.input, this.chip, this.countText, this.scope);

    this.input.addEventListener('input', () => {
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => this.send(), DEBOUNCE_MS);
    });
    this.input.addEventListener('keydown', e => {
      if (e.key === 'Enter') {
        this.send();
      }
      e.stopPropagation(); // keep the notebook's shortcuts out of the text box
    });
    this.scopeBox.addEventListener('change', () => model.save({ search_filtered: this.scopeBox.checked }));
  }

  /** The filter's traits changed. */
  update(): void {
    const { model } = this;
    const text = model.get('filter_text') || '';
    this.chip.hidden = !text;
    this.chipText.textContent = text;
    this.chip.title = text;
    const keyword = model.get('keyword') || '';
    if (document.activeElement !== this.input && this.input.value !== keyword) {
      this.input.value = keyword;
    }
    const filtering = (model.get('filter_mask')?.byteLength ?? 0) > 0;
    this.countText.textContent = filtering ? `${(model.get('filter_count') || 0).toLocaleString()} match` : '';
    this.scope.hidden = !filtering;
    this.scopeBox.checked = Boolean(model.get('search_filtered'));
  }

  destroy(): void {
    window.clearTimeout(this.timer);
  }

  private send(): void {
    window.clearTimeout(this.timer);
    if (this.input.value !== (this.model.get('keyword') || '')) {
      this.model.save({ keyword: this.input.value });
    }
  }
}
