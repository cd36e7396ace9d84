/** What the explorer's views share (one set per view of the widget). */

import type { SyncedModel } from './protocol';
import type { RowCache } from './rows';
import type { ScatterMap } from './scatter';

export interface Explorer {
  readonly model: SyncedModel;
  readonly rows: RowCache;
  readonly map: ScatterMap;
  /** The points on the map: how many, and their colour codes (`color_codes`, no copy). */
  readonly points: { n: number; codes: Uint8Array };
}
