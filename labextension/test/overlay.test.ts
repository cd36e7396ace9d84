import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { FINE_LABELS_ZOOM, labelsToShow } from '../src/explorer/overlay';
import type { ClusterLabel } from '../src/explorer/protocol';

const label = (name: string, level: number, members: number[]): ClusterLabel => ({
  label: name,
  x: 0,
  y: 0,
  size: members.length,
  level,
  members
});

const REGIONS = [label('north', 0, [0, 1, 2, 3]), label('south', 0, [4, 5, 6, 7])];
const CLUSTERS = [label('n1', 1, [0, 1]), label('n2', 1, [2, 3]), label('s1', 1, [4, 5, 6, 7])];
const ALL = [...REGIONS, ...CLUSTERS];
const names = (labels: ClusterLabel[]): string[] => labels.map(l => l.label);

describe('labelsToShow', () => {
  it('shows the coarse regions at the fitted view', () => {
    assert.deepEqual(names(labelsToShow(ALL, 1, null)), ['north', 'south']);
  });

  it('puts the dense regions first when zoomed in', () => {
    assert.deepEqual(names(labelsToShow(ALL, FINE_LABELS_ZOOM, null)), ['n1', 'n2', 's1', 'north', 'south']);
  });

  it('leaves out labels most of whose points are hidden', () => {
    const hidden = new Uint8Array([0, 0, 1, 1, 1, 1, 1, 0]);
    assert.deepEqual(names(labelsToShow(ALL, 1, hidden)), ['north']);
    assert.deepEqual(names(labelsToShow(ALL, 3, hidden)), ['n1', 'north']);
  });

  it('treats labels without a level as coarse', () => {
    const plain = [{ label: 'old', x: 0, y: 0, size: 3 }];
    assert.deepEqual(names(labelsToShow(plain, 1, null)), ['old']);
  });
});
