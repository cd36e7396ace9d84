/**
 * The model of an exported explorer (`SimilarityExplorer.to_html`): the synced state saved
 * in the page, no kernel. It stands in for anywidget's model: traits are read and set in
 * memory, texts are answered from the page, and the keyword box filters as Python does (a
 * substring, or /a regular expression/, ignoring case); pictures' thumbnails come from the
 * page too. What needs Python (queries, neighbours, the heatmap) is hidden by
 * `interactive: false`.
 */

import type { AnyModel } from '@anywidget/types';

import type { ExplorerState, Row, RowsRequest, ThumbnailsAnswer, ThumbnailsRequest, Trait } from './protocol';

/** What `to_html` writes into the page. */
export interface StaticExport {
  /** Traits; binary ones (names in `binary`) as base64. */
  state: Record<string, unknown>;
  binary: string[];
  /** Each point's text, and each tooltip column's values as strings. */
  texts: string[];
  fields: Record<string, string[]>;
  /** An explorer of pictures: each point's thumbnail (JPEG; size 0 for none), one after the
   * other in base64. */
  thumbnails?: { sizes: number[]; data: string };
}

type Listener = (...args: unknown[]) => void;

/** Bytes of a base64 string. */
function bytesOf(base64: string): Uint8Array {
  const raw = atob(base64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) {
    bytes[i] = raw.charCodeAt(i);
  }
  return bytes;
}

/** Bytes of a base64 string, as ipywidgets hands binary traits over (a DataView). */
function decode(base64: string): DataView {
  return new DataView(bytesOf(base64).buffer);
}

/**
 * Answers thumbnail requests from the page's JPEGs, as Python's answer comes (see
 * protocol.ThumbnailsAnswer): the blob is decoded on the first request.
 */
export function thumbnailAnswerer(
  thumbnails: NonNullable<StaticExport['thumbnails']>
): (request: ThumbnailsRequest) => [ThumbnailsAnswer, DataView[]] {
  let bytes: Uint8Array | null = null;
  const starts = new Float64Array(thumbnails.sizes.length + 1);
  thumbnails.sizes.forEach((size, i) => (starts[i + 1] = starts[i] + size));
  return request => {
    bytes ??= bytesOf(thumbnails.data);
    const indices = request.indices.filter(i => i >= 0 && i < thumbnails.sizes.length);
    const sizes = indices.map(i => thumbnails.sizes[i]);
    const out = new Uint8Array(sizes.reduce((sum, size) => sum + size, 0));
    let offset = 0;
    for (const i of indices) {
      out.set(bytes.subarray(starts[i], starts[i + 1]), offset);
      offset += thumbnails.sizes[i];
    }
    return [{ type: 'thumbnails', id: request.id, indices, sizes }, [new DataView(out.buffer)]];
  };
}

/** Whether each text holds `keyword`, as Python's explorer.filtering.keyword_mask decides. */
export function keywordMask(keyword: string, texts: readonly string[]): Uint8Array | null {
  const trimmed = keyword.trim();
  if (!trimmed) {
    return null;
  }
  const regex = /^\/(.+)\/$/s.exec(trimmed);
  let test: (text: string) => boolean;
  if (regex) {
    const pattern = new RegExp(regex[1], 'i');
    test = text => pattern.test(text);
  } else {
    const needle = keyword.toLowerCase();
    test = text => text.toLowerCase().includes(needle);
  }
  return Uint8Array.from(texts, text => (test(text) ? 1 : 0));
}

/** An in-memory model over an export (see the module's docstring). */
export function staticModel(data: StaticExport): AnyModel<ExplorerState> {
  const values = new Map<string, unknown>(Object.entries(data.state));
  for (const name of data.binary) {
    values.set(name, decode(String(values.get(name) ?? '')));
  }
  const listeners = new Map<string, Set<Listener>>();
  const changed = new Set<string>();
  const emit = (event: string, ...args: unknown[]): void => {
    for (const listener of listeners.get(event) ?? []) {
      listener(...args);
    }
  };
  const set = (name: string, value: unknown): void => {
    values.set(name, value);
    changed.add(name);
  };
  const flush = (): void => {
    const names = [...changed];
    changed.clear();
    for (const name of names) {
      emit(`change:${name}`);
    }
  };
  const refilter = (): void => {
    let mask: Uint8Array | null;
    try {
      mask = keywordMask(String(values.get('keyword') ?? ''), data.texts);
    } catch (error) {
      set('status', `${values.get('keyword')} is not a valid regular expression: ${String(error)}`);
      set('status_level', 'error');
      return;
    }
    const count = mask ? mask.reduce((sum, m) => sum + m, 0) : data.texts.length;
    set('filter_mask', new DataView((mask ?? new Uint8Array(0)).buffer));
    set('filter_count', count);
    set('status', mask ? `${count.toLocaleString()} of ${data.texts.length.toLocaleString()} match the filter` : '');
    set('status_level', 'info');
  };
  const rows = (request: RowsRequest): Row[] =>
    request.indices
      .filter(i => i >= 0 && i < data.texts.length)
      .map(i => ({
        index: i,
        text: data.texts[i],
        fields: Object.fromEntries(Object.entries(data.fields).map(([name, column]) => [name, column[i]]))
      }));
  const thumbnails = data.thumbnails ? thumbnailAnswerer(data.thumbnails) : null;

  const model = {
    get: (name: Trait) => values.get(name),
    set: (name: Trait, value: unknown) => set(name, value),
    save_changes: () => {
      if (changed.has('keyword')) {
        refilter();
      }
      flush();
    },
    on: (event: string, listener: Listener) => {
      if (!listeners.has(event)) {
        listeners.set(event, new Set());
      }
      listeners.get(event)!.add(listener);
    },
    off: (event?: string | null, listener?: Listener | null) => {
      if (event && listener) {
        listeners.get(event)?.delete(listener);
      }
    },
    send: (message: unknown) => {
      const request = message as RowsRequest | ThumbnailsRequest;
      // Answered after the call returns, as a kernel's answer would come.
      if (request?.type === 'rows') {
        void Promise.resolve().then(() =>
          emit('msg:custom', { type: 'rows', id: request.id, rows: rows(request) }, [])
        );
      } else if (request?.type === 'thumbnails' && thumbnails) {
        void Promise.resolve().then(() => emit('msg:custom', ...thumbnails(request)));
      }
    }
  };
  return model as unknown as AnyModel<ExplorerState>;
}
