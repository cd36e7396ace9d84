/**
 * The query box (hook: input.jme-query), the k menu and the rerank switch: typing sends the
 * query after a pause (Enter at once, Escape clears it), each edit with the next `query_seq`;
 * the spinner turns while an answer is due (`query_seq` ahead of `result_seq`). The switch
 * (hook: input.jme-rerank) shows when the explorer has a `reranker` and sets `rerank`.
 */

import { h } from './dom';
import type { SyncedModel } from './protocol';

const DEBOUNCE_MS = 250;
const K_CHOICES = [3, 5, 10, 20, 50];

/** The k menu's choices: the usual ones, and `k` in order among them if it is not one. */
export function kChoices(k: number): number[] {
  return K_CHOICES.includes(k) ? K_CHOICES : [...K_CHOICES, k].sort((a, b) => a - b);
}

/** What a view's query box hands over to the view replacing it. */
export interface SearchState {
  text: string;
  focused: boolean;
  start: number | null;
  end: number | null;
}

export class SearchBox {
  private readonly model: SyncedModel;
  private readonly input: HTMLInputElement;
  private readonly queryWrap: HTMLElement;
  private readonly kSelect: HTMLSelectElement;
  private seq: number;
  /** The query last sent (or set from Python). */
  private lastSent: string;
  private timer: number | undefined;

  private readonly rerankLabel: HTMLLabelElement;
  private readonly rerankToggle: HTMLInputElement;

  constructor(
    model: SyncedModel,
    input: HTMLInputElement,
    queryWrap: HTMLElement,
    kSelect: HTMLSelectElement,
    rerankLabel: HTMLLabelElement,
    rerankToggle: HTMLInputElement
  ) {
    this.model = model;
    this.input = input;
    this.queryWrap = queryWrap;
    this.kSelect = kSelect;
    this.rerankLabel = rerankLabel;
    this.rerankToggle = rerankToggle;
    rerankToggle.addEventListener('change', () => model.save({ rerank: rerankToggle.checked }));
    this.seq = model.get('query_seq') || 0;
    this.lastSent = model.get('query') || '';
    input.value = this.lastSent;
    input.addEventListener('input', () => {
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => this.send(), DEBOUNCE_MS);
    });
    input.addEventListener('keydown', e => {
      if (e.key === 'Enter') {
        this.send();
      } else if (e.key === 'Escape') {
        input.value = '';
        this.send();
      }
      // Keep JupyterLab's notebook shortcuts (e.g. "a", "b", "d d") out of the text box.
      e.stopPropagation();
    });
    kSelect.addEventListener('change', () => model.save({ k: Number(kSelect.value) }));
  }

  /** `query` changed. */
  updateQuery(): void {
    const query = this.model.get('query') || '';
    // Set from Python (e.g. search_text): show it, unless the user is typing here.
    if (document.activeElement !== this.input && this.input.value !== query) {
      this.input.value = query;
    }
    this.lastSent = query;
  }

  /** `k` changed. */
  updateK(): void {
    const k = this.model.get('k');
    this.kSelect.replaceChildren(
      ...kChoices(k).map(choice => {
        const option = h('option', '', `top ${choice}`);
        option.value = String(choice);
        option.selected = choice === k;
        return option;
      })
    );
  }

  /** `reranker` or `rerank` changed. */
  updateRerank(): void {
    const reranker = this.model.get('reranker') || '';
    this.rerankLabel.hidden = reranker === '';
    this.rerankLabel.title = `Rerank the best matches with ${reranker} (the map stays coloured by similarity)`;
    this.rerankToggle.checked = Boolean(this.model.get('rerank'));
  }

  /** `query_seq` or `result_seq` changed. */
  updateBusy(): void {
    this.queryWrap.classList.toggle('jme-busy', this.model.get('query_seq') > this.model.get('result_seq'));
  }

  destroy(): void {
    window.clearTimeout(this.timer);
  }

  /** The text in the box and whether it has the focus (for a view replacing this one). */
  handOver(): SearchState {
    const input = this.input;
    const focused = input.ownerDocument.activeElement === input;
    return { text: input.value, focused, start: input.selectionStart, end: input.selectionEnd };
  }

  /** Goes on from a replaced view's box: its text (sent after the usual pause if new), its focus. */
  takeOver(state: SearchState): void {
    const input = this.input;
    input.value = state.text;
    if (state.text !== this.lastSent) {
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => this.send(), DEBOUNCE_MS);
    }
    if (state.focused) {
      input.focus();
      input.setSelectionRange(state.start, state.end);
    }
  }

  private send(): void {
    window.clearTimeout(this.timer);
    this.timer = undefined;
    const text = this.input.value;
    if (text === this.lastSent) {
      return;
    }
    this.lastSent = text;
    this.seq = Math.max(this.seq, this.model.get('query_seq') || 0) + 1;
    this.model.save({ query: text, query_seq: this.seq });
    this.updateBusy();
  }
}
