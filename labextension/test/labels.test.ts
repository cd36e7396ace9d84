import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Box, clusterSpot, overlaps, place, rankSpots } from '../src/explorer/labels';

const box = (x: number, y: number, w = 10, h = 10): Box => ({ x, y, w, h });

describe('overlaps', () => {
  it('is true for boxes sharing area, either way round', () => {
    assert.equal(overlaps(box(0, 0), box(5, 5)), true);
    assert.equal(overlaps(box(5, 5), box(0, 0)), true);
    assert.equal(overlaps(box(0, 0, 100, 100), box(10, 10)), true);
  });

  it('is false for boxes that only touch or lie apart', () => {
    assert.equal(overlaps(box(0, 0), box(10, 0)), false);
    assert.equal(overlaps(box(0, 0), box(0, 10)), false);
    assert.equal(overlaps(box(0, 0), box(50, 50)), false);
  });
});

describe('place', () => {
  it('takes the first candidate that is free and inside', () => {
    const taken = [box(0, 0)];
    const spot = place([box(5, 5), box(-5, 20), box(20, 20), box(40, 40)], taken, 100, 100);
    assert.deepEqual(spot, box(20, 20));
    assert.deepEqual(taken, [box(0, 0), box(20, 20)]);
  });

  it('keeps labels inside the map', () => {
    assert.equal(place([box(95, 0)], [], 100, 100), null);
    assert.equal(place([box(0, 95)], [], 100, 100), null);
    assert.deepEqual(place([box(90, 90)], [], 100, 100), box(90, 90));
  });

  it('hides a label with no free spot, and takes nothing', () => {
    const taken = [box(0, 0, 100, 100)];
    assert.equal(place([box(10, 10), box(50, 50)], taken, 100, 100), null);
    assert.equal(taken.length, 1);
  });

  it('places earlier labels first', () => {
    const taken: Box[] = [];
    place(rankSpots(50, 50, 12, 14), taken, 200, 200);
    const second = place(rankSpots(50, 50, 12, 14), taken, 200, 200);
    assert.deepEqual(second, rankSpots(50, 50, 12, 14)[1]);
  });
});

describe('rankSpots', () => {
  it('tries above right, above left, below right, below left of the ring', () => {
    assert.deepEqual(rankSpots(100, 100, 20, 14), [
      { x: 108, y: 84, w: 20, h: 14 },
      { x: 72, y: 84, w: 20, h: 14 },
      { x: 108, y: 102, w: 20, h: 14 },
      { x: 72, y: 102, w: 20, h: 14 }
    ]);
  });
});

describe('clusterSpot', () => {
  it('centres the label on the cluster', () => {
    assert.deepEqual(clusterSpot(100, 50, 40), { x: 80, y: 41, w: 40, h: 18 });
  });

  it('moves a label at the edge inside the view', () => {
    assert.deepEqual(clusterSpot(5, 3, 40, 300, 200), { x: 0, y: 0, w: 40, h: 18 });
    assert.deepEqual(clusterSpot(295, 198, 40, 300, 200), { x: 260, y: 182, w: 40, h: 18 });
  });
});
