/**
 * Texts (and tooltip fields) on demand: rows Python sent are kept, missing ones are asked for
 * with a `RowsRequest` and arrive as the `RowsAnswer` of the same id. No DOM: unit-tested in
 * node with a fake `send`.
 */

import type { Row, RowsAnswer, RowsRequest } from './protocol';

export class RowCache {
  private readonly send: (request: RowsRequest) => void;
  private readonly rows = new Map<number, Row>();
  private readonly waiting = new Map<number, () => void>();
  private nextRequest = 1;

  constructor(send: (request: RowsRequest) => void) {
    this.send = send;
  }

  /**
   * The rows of `indices`, in order: at once when all are here, else once Python answered
   * (indices it has no row for are left out).
   */
  fetch(indices: readonly number[]): Promise<Row[]> {
    const missing = indices.filter(i => !this.rows.has(i));
    if (!missing.length) {
      return Promise.resolve(indices.map(i => this.rows.get(i)!));
    }
    const id = this.nextRequest++;
    return new Promise(resolve => {
      this.waiting.set(id, () => resolve(indices.filter(i => this.rows.has(i)).map(i => this.rows.get(i)!)));
      this.send({ type: 'rows', id, indices: missing });
    });
  }

  /** Takes a custom message's content: keeps the rows of an answer; ignores anything else. */
  receive(message: unknown): void {
    const content = message as Partial<RowsAnswer> | null | undefined;
    if (content?.type !== 'rows' || content.id === undefined) {
      return;
    }
    for (const row of content.rows ?? []) {
      this.rows.set(row.index, row);
    }
    this.waiting.get(content.id)?.();
    this.waiting.delete(content.id);
  }
}
