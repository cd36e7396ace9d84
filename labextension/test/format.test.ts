import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatNumber, score, scoreOfCode, shorten } from '../src/explorer/format';
import { kChoices } from '../src/explorer/search';

describe('shorten', () => {
  it('puts text on one line', () => {
    assert.equal(shorten('  a\n\tb   c ', 10), 'a b c');
  });

  it('cuts long text with an ellipsis, within the width', () => {
    assert.equal(shorten('abcdefghij', 10), 'abcdefghij');
    assert.equal(shorten('abcdefghijk', 10), 'abcdefghi…');
    assert.equal(shorten('abcd     efgh', 6), 'abcd…');
  });
});

describe('score and scoreOfCode', () => {
  it('shows three decimals', () => {
    assert.equal(score(0.12345), '0.123');
    assert.equal(score(1), '1.000');
  });

  it('maps score codes 0..254 onto the score range', () => {
    assert.equal(scoreOfCode(0, [0.2, 0.8]), 0.2);
    assert.equal(scoreOfCode(254, [0.2, 0.8]), 0.8);
    assert.equal(scoreOfCode(127, [0, 1]), 0.5);
  });
});

describe('formatNumber', () => {
  it('rounds to three decimals in the usual range', () => {
    assert.equal(formatNumber(0), '0');
    assert.equal(formatNumber(3.14159), '3.142');
    assert.equal(formatNumber(-42), '-42');
  });

  it('uses exponents for very large and very small numbers', () => {
    assert.equal(formatNumber(123456), '1.23e+5');
    assert.equal(formatNumber(0.0001234), '1.23e-4');
  });
});

describe('kChoices', () => {
  it('offers the usual choices, with k in order among them', () => {
    assert.deepEqual(kChoices(5), [3, 5, 10, 20, 50]);
    assert.deepEqual(kChoices(7), [3, 5, 7, 10, 20, 50]);
    assert.deepEqual(kChoices(100), [3, 5, 10, 20, 50, 100]);
  });
});
