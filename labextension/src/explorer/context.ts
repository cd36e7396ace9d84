/** What the explorer's views share (one set per view of the widget). */

import type { SyncedModel } from './protocol';
import type { RowCache } from './rows';
import type { ScatterMap } from './scatter';
import type { ThumbnailCache } from './thumbnails';

export interface Explorer {
  readonly model: SyncedModel;
  readonly rows: RowCache;
  readonly map: ScatterMap;
  /** An explorer of pictures' thumbnails (null: the points are texts). */
  readonly thumbnails: ThumbnailCache | null;
  /** The points on the map: how many, and their colour codes (`color_codes`, no copy). */
  readonly points: { n: number; codes: Uint8Array };
}
