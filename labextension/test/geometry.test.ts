import assert from 'node:assert/strict';
import KDBush from 'kdbush';
import { describe, it } from 'node:test';

import {
  fillCodes,
  fitPoints,
  frame,
  pointSizeFor,
  pointsInside,
  shuffled,
  opacityScale,
  sizeScale,
  spatialIndex,
  toData,
  toScreen
} from '../src/explorer/geometry';

const close = (actual: number, expected: number, tolerance = 1e-6): void =>
  assert.ok(Math.abs(actual - expected) <= tolerance, `${actual} is not ${expected}`);

describe('fitPoints', () => {
  it('centres the points and fits the longer side into [-0.95, 0.95]', () => {
    const fitted = fitPoints(new Float32Array([10, 0, 30, 5, 20, 10]));
    assert.equal(fitted.n, 3);
    assert.deepEqual(fitted.center, [20, 5]);
    close(fitted.scale, 1.9 / 20);
    assert.deepEqual([...fitted.xs], [-0.95, 0.95, 0].map(Math.fround));
    // The aspect ratio is kept: the short side spans half the long one.
    assert.deepEqual([...fitted.ys], [-0.475, 0, 0.475].map(Math.fround));
  });

  it('builds one regl-scatterplot row per point, codes 0', () => {
    const fitted = fitPoints(new Float32Array([0, 0, 2, 2]));
    assert.deepEqual(fitted.rows, [
      [-0.95, -0.95, 0, 0],
      [0.95, 0.95, 0, 0]
    ]);
  });

  it('ignores a trailing half point and survives no points or one', () => {
    assert.equal(fitPoints(new Float32Array([1, 2, 3])).n, 1);
    const none = fitPoints(new Float32Array(0));
    assert.equal(none.n, 0);
    assert.deepEqual(none.center, [0, 0]);
    const one = fitPoints(new Float32Array([4, 7]));
    assert.deepEqual(one.center, [4, 7]);
    assert.deepEqual([...one.xs, ...one.ys], [0, 0]);
  });
});

describe('fillCodes', () => {
  it('writes colour and size codes, 0 where there are none', () => {
    const rows = [
      [0, 0, 9, 9],
      [1, 1, 9, 9]
    ];
    fillCodes(rows, new Uint8Array([3, 4]), null);
    assert.deepEqual(rows, [
      [0, 0, 3, 0],
      [1, 1, 4, 0]
    ]);
    fillCodes(rows, null, new Uint8Array([200, 254]));
    assert.deepEqual(rows, [
      [0, 0, 0, 200],
      [1, 1, 0, 254]
    ]);
  });

  it('gives greyed out points the code after the palette', () => {
    const rows = [
      [0, 0, 9, 9],
      [1, 1, 9, 9]
    ];
    fillCodes(rows, new Uint8Array([3, 4]), new Uint8Array([7, 8]), { mask: new Uint8Array([0, 1]), code: 21 });
    assert.deepEqual(rows, [
      [0, 0, 3, 7],
      [1, 1, 21, 8]
    ]);
  });
});

describe('sizeScale', () => {
  it('spans half to two and a half times the base, missing values smallest', () => {
    const sizes = sizeScale(4);
    assert.equal(sizes.length, 256);
    assert.deepEqual([sizes[0], sizes[127], sizes[254], sizes[255]], [2, 6, 10, 2]);
  });
});

describe('opacityScale', () => {
  it('fades the smallest values and missing ones to 0.15, the largest opaque', () => {
    const opacity = opacityScale();
    assert.equal(opacity.length, 256);
    assert.deepEqual([opacity[0], opacity[254], opacity[255]], [0.15, 1, 0.15]);
    assert.ok(opacity.slice(0, 255).every((v, i, all) => i === 0 || v > all[i - 1]));
  });
});

describe('pointSizeFor', () => {
  it('draws fewer points bigger', () => {
    assert.deepEqual([10, 1_999, 2_000, 19_999, 20_000, 199_999, 200_000].map(pointSizeFor), [10, 10, 6, 6, 3, 3, 2]);
  });
});

describe('frame', () => {
  it('leaves small maps to regl-scatterplot', () => {
    assert.equal(frame(new Float32Array(999), new Float32Array(999)), null);
  });

  it('frames all but the outermost points, with a margin', () => {
    const n = 10_000;
    const xs = new Float32Array(n);
    const ys = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      xs[i] = (i % 100) / 100 - 0.5; // -0.5 .. 0.49
      ys[i] = Math.floor(i / 100) / 200 - 0.25; // -0.25 .. 0.245
    }
    xs[0] = 50; // a stray point far away
    const rect = frame(xs, ys)!;
    assert.ok(rect.x < -0.5 && rect.x > -0.6, `x ${rect.x}`);
    assert.ok(rect.x + rect.width > 0.49 && rect.x + rect.width < 0.6, `right ${rect.x + rect.width}`);
    assert.ok(rect.y < -0.25 && rect.y + rect.height > 0.245);
  });
});

describe('shuffled', () => {
  it('is a permutation, the same every time', () => {
    const order = shuffled(1_000);
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      Array.from({ length: 1_000 }, (_, i) => i)
    );
    assert.deepEqual(shuffled(1_000), order);
  });

  it('spreads any first part over the whole map', () => {
    const head = shuffled(10_000).slice(0, 1_000);
    const firstHalf = head.filter(i => i < 5_000).length;
    assert.ok(firstHalf > 400 && firstHalf < 600, `${firstHalf} of 1000 in the first half`);
  });

  it('handles no points and one', () => {
    assert.deepEqual(shuffled(0), []);
    assert.deepEqual(shuffled(1), [0]);
  });
});

describe('toScreen and toData', () => {
  const identity = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
  // Zoomed in twice and panned: regl-scatterplot's view matrix (column-major).
  const moved = [2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0.3, -0.2, 0, 1];

  it('puts the origin in the middle of the map box, y up', () => {
    assert.deepEqual(toScreen(identity, 400, 200, 0, 0), [200, 100]);
    assert.deepEqual(toScreen(identity, 400, 200, 0, 1), [200, 0]);
    // The aspect ratio is kept: one unit of x spans as many pixels as one of y.
    assert.deepEqual(toScreen(identity, 400, 200, 1, 0), [300, 100]);
  });

  it('are inverse to each other', () => {
    for (const [x, y] of [
      [0, 0],
      [0.5, -0.25],
      [-0.9, 0.7]
    ]) {
      const [sx, sy] = toScreen(moved, 640, 440, x, y);
      const [dx, dy] = toData(moved, 640, 440, sx, sy);
      close(dx, x);
      close(dy, y);
    }
  });
});

describe('pointsInside', () => {
  const xs = new Float32Array([0, 1, 2, 3]);
  const ys = new Float32Array([0, 1, 2, 3]);

  it('takes the points in the rectangle, edges included, corners in any order', () => {
    assert.deepEqual(pointsInside(xs, ys, [1, 1], [2, 2]), [1, 2]);
    assert.deepEqual(pointsInside(xs, ys, [2.5, 0.5], [0.5, 2.5]), [1, 2]);
    assert.deepEqual(pointsInside(xs, ys, [5, 5], [6, 6]), []);
  });
});

describe('spatialIndex', () => {
  it("indexes the points as regl-scatterplot's own would: a range finds the points inside", () => {
    const n = 5_000;
    const xs = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.9);
    const ys = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 78.233) * 0.9);
    const index = KDBush.from(spatialIndex(xs, ys));
    const found = index.range(-0.2, 0.1, 0.3, 0.5).sort((a, b) => a - b);
    const expected = [...xs.keys()].filter(i => xs[i] >= -0.2 && xs[i] <= 0.3 && ys[i] >= 0.1 && ys[i] <= 0.5);
    assert.ok(expected.length > 50);
    assert.deepEqual(found, expected);
    assert.equal(index.nodeSize, 16);
  });
});
