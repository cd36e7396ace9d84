import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { fewPointsInside } from '../src/explorer/geometry';
import type { ThumbnailsRequest } from '../src/explorer/protocol';
import { thumbnailAnswerer } from '../src/explorer/static';
import { ThumbnailCache } from '../src/explorer/thumbnails';

function cache(limit = 10): { thumbs: ThumbnailCache; sent: ThumbnailsRequest[]; released: string[] } {
  const sent: ThumbnailsRequest[] = [];
  const released: string[] = [];
  const urls = {
    create: (bytes: Uint8Array) => `url:${Array.from(bytes).join(',')}`,
    release: (url: string) => void released.push(url)
  };
  return { thumbs: new ThumbnailCache(request => sent.push(request), urls, limit), sent, released };
}

/** An answer's buffer: the JPEGs (here, short byte strings) one after the other. */
function answer(id: number, parts: [number, number[]][]): [object, ArrayBuffer[]] {
  const bytes = parts.flatMap(([, b]) => b);
  const content = { type: 'thumbnails', id, indices: parts.map(([i]) => i), sizes: parts.map(([, b]) => b.length) };
  return [content, [new Uint8Array(bytes).buffer]];
}

describe('ThumbnailCache', () => {
  it('asks for the missing thumbnails and cuts the answer by sizes', async () => {
    const { thumbs, sent } = cache();
    const got = thumbs.fetch([3, 5]);
    assert.deepEqual(sent, [{ type: 'thumbnails', id: 1, indices: [3, 5] }]);
    thumbs.receive(
      ...answer(1, [
        [3, [1, 2]],
        [5, []]
      ])
    );
    assert.deepEqual(
      [...(await got)],
      [
        [3, 'url:1,2'],
        [5, '']
      ]
    );
  });

  it('never asks twice for a thumbnail on its way, and answers out of order resolve each request', async () => {
    const { thumbs, sent } = cache();
    const first = thumbs.fetch([1, 2]);
    const second = thumbs.fetch([2, 3]);
    assert.deepEqual(
      sent.map(r => r.indices),
      [[1, 2], [3]]
    );
    thumbs.receive(...answer(2, [[3, [9]]]));
    thumbs.receive(
      ...answer(1, [
        [1, [7]],
        [2, [8]]
      ])
    );
    assert.deepEqual(
      [...(await second)],
      [
        [2, 'url:8'],
        [3, 'url:9']
      ]
    );
    assert.deepEqual(
      [...(await first)],
      [
        [1, 'url:7'],
        [2, 'url:8']
      ]
    );
    assert.equal(thumbs.peek(2), 'url:8');
  });

  it('keeps at most `limit`, releasing the least recently used', async () => {
    const { thumbs, released } = cache(2);
    const got = thumbs.fetch([1, 2]);
    thumbs.receive(
      ...answer(1, [
        [1, [1]],
        [2, [2]]
      ])
    );
    await got;
    thumbs.peek(1); // 1 is now the most recent
    const more = thumbs.fetch([3]);
    thumbs.receive(...answer(2, [[3, [3]]]));
    await more;
    assert.deepEqual(released, ['url:2']);
    assert.equal(thumbs.peek(2), undefined);
  });

  it('ignores other messages', () => {
    const { thumbs } = cache();
    thumbs.receive({ type: 'rows', id: 1, rows: [] });
    thumbs.receive(null);
    assert.equal(thumbs.peek(1), undefined);
  });
});

describe('fewPointsInside', () => {
  const xs = new Float32Array([0, 0.5, 0.9, -0.5]);
  const ys = new Float32Array([0, 0.5, 0.9, -0.5]);
  it('lists the points in the rectangle', () => {
    assert.deepEqual(fewPointsInside(xs, ys, [-0.1, -0.1], [0.6, 0.6], 10), [0, 1]);
  });
  it('gives null past the limit', () => {
    assert.equal(fewPointsInside(xs, ys, [-1, -1], [1, 1], 3), null);
    assert.deepEqual(fewPointsInside(xs, ys, [-1, -1], [1, 1], 4), [0, 1, 2, 3]);
  });
});

describe('thumbnailAnswerer (an exported page)', () => {
  it("answers from the page's JPEGs as Python would, through the cache", async () => {
    // Three pictures: [7, 8], unreadable (size 0), [9].
    const data = Buffer.from([7, 8, 9]).toString('base64');
    const answerer = thumbnailAnswerer({ sizes: [2, 0, 1], data });
    const [content, buffers] = answerer({ type: 'thumbnails', id: 4, indices: [2, 0, 1, 99] });
    assert.deepEqual(content, { type: 'thumbnails', id: 4, indices: [2, 0, 1], sizes: [1, 2, 0] });
    assert.deepEqual([...new Uint8Array(buffers[0].buffer)], [9, 7, 8]);
    const { thumbs } = cache();
    const got = thumbs.fetch([0, 1, 2]);
    thumbs.receive(...answerer({ type: 'thumbnails', id: 1, indices: [0, 1, 2] }));
    assert.deepEqual(
      [...(await got)],
      [
        [0, 'url:7,8'],
        [1, ''],
        [2, 'url:9']
      ]
    );
  });
});
