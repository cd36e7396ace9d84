import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { RGB, css, isDark, mix, parseColor, similarity, similarityRamp, viridis } from '../src/explorer/colors';

const WHITE: RGB = [255, 255, 255];
const BLACK: RGB = [0, 0, 0];

describe('viridis', () => {
  it('starts and ends on the stops of matplotlib', () => {
    assert.deepEqual(viridis(0), [68, 1, 84]);
    assert.deepEqual(viridis(1), [253, 231, 37]);
  });

  it('clamps out-of-range and non-finite values', () => {
    assert.deepEqual(viridis(-3), viridis(0));
    assert.deepEqual(viridis(7), viridis(1));
    assert.deepEqual(viridis(NaN), viridis(0));
  });

  it('passes through every stop and interpolates between them', () => {
    assert.deepEqual(viridis(1 / 9), [72, 40, 120]);
    const [r, g, b] = viridis(0.5 / 9); // halfway between the first two stops
    assert.ok(Math.abs(r - 70) < 1e-9 && Math.abs(g - 20.5) < 1e-9 && Math.abs(b - 102) < 1e-9);
  });
});

describe('mix and css', () => {
  it('mixes linearly', () => {
    assert.deepEqual(mix(BLACK, WHITE, 0.25), [63.75, 63.75, 63.75]);
  });

  it('writes rounded rgb()', () => {
    assert.equal(css([63.75, 0.4, 254.5]), 'rgb(64, 0, 255)');
  });
});

describe('parseColor', () => {
  it('reads rgb() and rgba() as computed styles give them', () => {
    assert.deepEqual(parseColor('rgb(10, 20, 30)', WHITE), [10, 20, 30]);
    assert.deepEqual(parseColor('rgba(10, 20, 30, 0.5)', WHITE), [10, 20, 30]);
    assert.deepEqual(parseColor('rgb(10 20 30 / 50%)', WHITE), [10, 20, 30]);
  });

  it('falls back for transparent colours and anything else', () => {
    assert.deepEqual(parseColor('rgba(0, 0, 0, 0)', WHITE), WHITE);
    assert.deepEqual(parseColor('#123456', BLACK), BLACK);
    assert.deepEqual(parseColor('', BLACK), BLACK);
  });
});

describe('isDark', () => {
  it('tells dark backgrounds from light ones by luma', () => {
    assert.equal(isDark(BLACK), true);
    assert.equal(isDark(WHITE), false);
    assert.equal(isDark([30, 30, 30]), true);
    assert.equal(isDark([0, 255, 0]), false); // green is bright
  });
});

describe('similarity', () => {
  it('is plasma at full strength for the best match', () => {
    assert.deepEqual(similarity(1, WHITE), [13, 8, 135]); // dark end on light backgrounds
    assert.deepEqual(similarity(1, BLACK), [240, 249, 33]); // bright end on dark ones
  });

  it('fades the worst match into the background', () => {
    const worst = similarity(0, WHITE);
    const best = similarity(1, WHITE);
    const distance = (c: RGB): number => Math.hypot(c[0] - 255, c[1] - 255, c[2] - 255);
    assert.ok(distance(worst) < distance(best) / 2);
  });
});

describe('similarityRamp', () => {
  it('has a colour per score code, 255 drawn as 254', () => {
    const ramp = similarityRamp(WHITE);
    assert.equal(ramp.length, 256);
    assert.equal(ramp[0], css(similarity(0, WHITE)));
    assert.equal(ramp[254], css(similarity(1, WHITE)));
    assert.equal(ramp[255], ramp[254]);
  });
});
