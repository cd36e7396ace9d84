/**
 * The explorer's protocol with Python (`jupyter_mlx_embed.SimilarityExplorer`): every synced
 * trait with its type, the custom messages, and typed helpers over anywidget's model. The
 * front end takes trait names from here only: `SyncedModel` accepts no other name, so a
 * misspelt or removed trait fails to compile.
 *
 * tests/test_explorer_protocol.py parses `ExplorerState` and compares it with the Python
 * traits tagged `sync=True` (names, and coarse types), so a trait added on one side only
 * fails the tests.
 *
 * Python owns the data and the maths; the front end draws and reports gestures. Binary
 * traits arrive as DataViews: `coords` (n x 2 float32), `color_codes` and `scores` (n
 * uint8), `heatmap` (m x m float32). Texts arrive on demand, as answers to `RowsRequest`,
 * and pictures' thumbnails as answers to `ThumbnailsRequest`.
 */

import type { AnyModel } from '@anywidget/types';

/** A ranked text: a query match or a neighbour. */
export interface Hit {
  index: number;
  text: string;
  /** The similarity, or the reranker's score for a reranked match. */
  score: number;
  /** A reranked match's similarity to the query. */
  similarity?: number;
}

/** A cluster's label at its centre (data coordinates, as `coords`). */
export interface ClusterLabel {
  label: string;
  x: number;
  y: number;
  size: number;
  /** 0: a coarse region (labels of the whole map); 1: a dense region (shown zoomed in). */
  level?: number;
  /** A sample of its points (indices). */
  members?: number[];
}

/** Density lines around the densest areas holding `share` of the points (of a category
 * coloured `color`, or of all points: ''); each path flat [x0, y0, x1, y1, ...], closed, in
 * data coordinates (as `coords`). */
export interface ContourSet {
  share: number;
  color: string;
  paths: number[][];
}

/** A text and its tooltip columns (values as strings), as a `RowsAnswer` carries them. */
export interface Row {
  index: number;
  text: string;
  fields: Record<string, string>;
}

// The synced traits, one `name: type;` a line. The test reads the types coarsely:
// DataView = Bytes, string = Unicode, number = Int or Float, boolean = Bool, T[] = List
// (of T), Record<...> or an interface of this file = Dict.
export interface ExplorerState {
  // The map, Python to front end.
  /** n x 2 float32, any range. */
  coords: DataView;
  /** pca or umap. */
  projection: string;
  map_status: string;
  /** Coarse regions, then dense ones; each largest first. */
  clusters: ClusterLabel[];
  // Colours: `color_by` is also set by the front end (the colour menu).
  color_by: string;
  color_options: string[];
  /** none, categorical or numeric. */
  color_kind: string;
  /** n uint8, indices into `color_palette`. */
  color_codes: DataView;
  color_names: string[];
  color_counts: number[];
  color_palette: string[];
  /** A numeric column's [lo, hi]. */
  color_range: number[];
  tooltip_columns: string[];
  embedding_model: string;
  /** Of the map, CSS px. */
  height: number;
  /** The points are pictures: thumbnails on demand (`ThumbnailsRequest`). */
  pictures: boolean;
  // Requests, front end (or Python) to Python.
  query: string;
  /** A reranker for the query's nearest texts ('' for none), and whether it is switched on. */
  reranker: string;
  rerank: boolean;
  /** Set with `query`: each edit takes the next number. */
  query_seq: number;
  k: number;
  /** A point index, -1 for none. */
  clicked: number;
  selection: number[];
  // Answers.
  /** The `query_seq` the answer belongs to. */
  result_seq: number;
  /** n uint8: 0..254 from score_range[0] to score_range[1]; empty without a query. */
  scores: DataView;
  score_range: number[];
  top_k: Hit[];
  neighbors: Hit[];
  /** m x m float32, rows in seriated order. */
  heatmap: DataView;
  heatmap_indices: number[];
  heatmap_labels: string[];
  heatmap_note: string;
  status: string;
  /** info, busy or error. */
  status_level: string;
  // The filter: points that do not match are greyed out.
  /** n uint8, 1 for a match; empty for no filter. */
  filter_mask: DataView;
  filter_count: number;
  /** The filter set from Python, as shown ('' for none); the front end empties it to clear it. */
  filter_text: string;
  /** Typed in the filter box: a substring, or /a regular expression/. */
  keyword: string;
  /** [lo, hi] of the numeric colour column ([] for no range). */
  value_range: number[];
  /** Queries rank only the matching points. */
  search_filtered: boolean;
  /** Points scaled by a numeric column among `size_options`: their size and/or their
   * opacity ('' for none; one column at a time), and that column as n uint8 codes (0..254
   * smallest to largest, 255 missing; empty for none). */
  size_by: string;
  opacity_by: string;
  size_options: string[];
  scale_codes: DataView;
  /** Density contours switched on (front end or Python), and their lines. */
  density: boolean;
  contours: ContourSet[];
  /** False in an exported page (no kernel): what needs Python is hidden. */
  interactive: boolean;
  /** Which views show this explorer (anywidget gives each view its own model object). */
  view_key: string;
}

/** A synced trait's name. */
export type Trait = keyof ExplorerState;

/** Front end to Python: the texts (and tooltip fields) of these points. */
export interface RowsRequest {
  type: 'rows';
  id: number;
  indices: number[];
}

/** Python to front end: the answer to the `RowsRequest` of the same id. */
export interface RowsAnswer {
  type: 'rows';
  id: number;
  rows: Row[];
}

/** Front end to Python: the thumbnails of these points (an explorer of pictures). */
export interface ThumbnailsRequest {
  type: 'thumbnails';
  id: number;
  indices: number[];
}

/**
 * Python to front end: the answer to the `ThumbnailsRequest` of the same id, with one buffer:
 * the JPEGs of `indices` one after the other, `sizes` bytes each (0: unreadable).
 */
export interface ThumbnailsAnswer {
  type: 'thumbnails';
  id: number;
  indices: number[];
  sizes: number[];
}

/**
 * A view's typed access to the model: reads, writes (one `save_changes` per batch), change
 * listeners and custom messages; `dispose` removes every listener added through it.
 */
export class SyncedModel {
  private readonly model: AnyModel<ExplorerState>;
  private readonly cleanups: (() => void)[] = [];

  constructor(model: AnyModel<ExplorerState>) {
    this.model = model;
  }

  get<K extends Trait>(name: K): ExplorerState[K] {
    return this.model.get(name);
  }

  /** Sets these traits and sends them to Python together. */
  save(changes: Partial<ExplorerState>): void {
    for (const [name, value] of Object.entries(changes)) {
      this.model.set(name as Trait, value as never);
    }
    this.model.save_changes();
  }

  /** Calls `callback` on each change of the trait `name`. */
  onChange(name: Trait, callback: () => void): void {
    const event = `change:${name}` as const;
    this.model.on(event, callback);
    this.cleanups.push(() => this.model.off(event, callback));
  }

  /** Calls `callback` with each custom message's content and buffers. */
  onMessage(callback: (content: unknown, buffers: (DataView | ArrayBuffer)[]) => void): void {
    const listener = (content: unknown, buffers?: (DataView | ArrayBuffer)[]): void => callback(content, buffers ?? []);
    this.model.on('msg:custom', listener);
    this.cleanups.push(() => this.model.off('msg:custom', listener));
  }

  send(message: RowsRequest | ThumbnailsRequest): void {
    this.model.send(message);
  }

  dispose(): void {
    for (const cleanup of this.cleanups.splice(0)) {
      cleanup();
    }
  }
}
