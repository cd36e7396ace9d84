import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Row, RowsRequest } from '../src/explorer/protocol';
import { RowCache } from '../src/explorer/rows';

const row = (index: number): Row => ({ index, text: `text ${index}`, fields: {} });

function cache(): { rows: RowCache; sent: RowsRequest[] } {
  const sent: RowsRequest[] = [];
  return { rows: new RowCache(request => sent.push(request)), sent };
}

describe('RowCache', () => {
  it('asks Python for missing rows and resolves with its answer, in order', async () => {
    const { rows, sent } = cache();
    const answer = rows.fetch([4, 2]);
    assert.deepEqual(sent, [{ type: 'rows', id: 1, indices: [4, 2] }]);
    rows.receive({ type: 'rows', id: 1, rows: [row(2), row(4)] });
    assert.deepEqual(await answer, [row(4), row(2)]);
  });

  it('answers from the rows it has without asking again', async () => {
    const { rows, sent } = cache();
    const first = rows.fetch([1]);
    rows.receive({ type: 'rows', id: 1, rows: [row(1)] });
    await first;
    assert.deepEqual(await rows.fetch([1, 1]), [row(1), row(1)]);
    assert.equal(sent.length, 1);
  });

  it('asks only for the rows it lacks, each request with a new id', async () => {
    const { rows, sent } = cache();
    const first = rows.fetch([1]);
    rows.receive({ type: 'rows', id: 1, rows: [row(1)] });
    await first;
    const second = rows.fetch([1, 3]);
    assert.deepEqual(sent[1], { type: 'rows', id: 2, indices: [3] });
    rows.receive({ type: 'rows', id: 2, rows: [row(3)] });
    assert.deepEqual(await second, [row(1), row(3)]);
  });

  it('leaves out rows Python did not send', async () => {
    const { rows } = cache();
    const answer = rows.fetch([7, 8]);
    rows.receive({ type: 'rows', id: 1, rows: [row(8)] });
    assert.deepEqual(await answer, [row(8)]);
  });

  it('keeps rows that arrive unasked, and ignores other messages', async () => {
    const { rows, sent } = cache();
    rows.receive({ type: 'rows', id: 99, rows: [row(5)] });
    rows.receive({ type: 'other', id: 1, rows: [row(6)] });
    rows.receive({ type: 'rows', rows: [row(6)] });
    rows.receive(null);
    rows.receive('rows');
    assert.deepEqual(await rows.fetch([5]), [row(5)]);
    assert.equal(sent.length, 0);
    void rows.fetch([6]);
    assert.deepEqual(sent[0].indices, [6]);
  });
});
