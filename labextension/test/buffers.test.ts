import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { float32s, indicesWithCode, int32s, sameBytes, uint8s } from '../src/explorer/buffers';

describe('float32s and int32s', () => {
  it('read an aligned DataView without copying', () => {
    const buffer = new Float32Array([1.5, -2, 3]).buffer;
    const values = float32s(new DataView(buffer, 4, 8));
    assert.deepEqual([...values], [-2, 3]);
    assert.equal(values.buffer, buffer);
    assert.deepEqual([...int32s(new DataView(new Int32Array([7, -8]).buffer))], [7, -8]);
  });

  it('copy an unaligned DataView, dropping a partial value', () => {
    const bytes = new Uint8Array(11);
    new DataView(bytes.buffer).setFloat32(1, 0.25, true);
    new DataView(bytes.buffer).setFloat32(5, -4, true);
    assert.deepEqual([...float32s(new DataView(bytes.buffer, 1, 10))], [0.25, -4]);
  });

  it('read an ArrayBuffer, and nothing else', () => {
    assert.deepEqual([...float32s(new Float32Array([6]).buffer)], [6]);
    assert.equal(float32s(undefined).length, 0);
    assert.equal(float32s([1, 2]).length, 0);
  });
});

describe('uint8s', () => {
  it('views a DataView, a typed array or an ArrayBuffer without copying', () => {
    const buffer = new Uint8Array([1, 2, 3, 4]).buffer;
    const view = uint8s(new DataView(buffer, 1, 2));
    assert.deepEqual([...view], [2, 3]);
    assert.equal(view.buffer, buffer);
    assert.deepEqual([...uint8s(buffer)], [1, 2, 3, 4]);
    assert.deepEqual([...uint8s(new Uint8Array(buffer, 3))], [4]);
    assert.equal(uint8s(null).length, 0);
  });
});

describe('indicesWithCode', () => {
  it('lists the points of one category in order', () => {
    assert.deepEqual(indicesWithCode(new Uint8Array([0, 2, 1, 2, 2]), 2), [1, 3, 4]);
    assert.deepEqual(indicesWithCode(new Uint8Array([0, 1]), 5), []);
  });
});

describe('sameBytes', () => {
  it('tells one binary trait read twice from different bytes', () => {
    const trait = new DataView(new Uint8Array([1, 2, 3, 4]).buffer, 1, 2);
    assert.ok(sameBytes(uint8s(trait), uint8s(trait)));
    assert.ok(!sameBytes(uint8s(trait), new Uint8Array([2, 3])));
    assert.ok(!sameBytes(uint8s(trait), new Uint8Array(trait.buffer, 1, 3)));
  });
});
