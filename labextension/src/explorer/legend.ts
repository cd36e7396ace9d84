/**
 * The legend under the map: the similarity ramp while a query colours the points, else the
 * colour column's ramp (numbers) or its categories, each a button that shows that category
 * alone (hooks: .jme-legend-item).
 */

import { RGB, css, parseColor, similarity } from './colors';
import type { Explorer } from './context';
import { indicesWithCode, uint8s } from './buffers';
import { cssVar, h, ramp } from './dom';
import { formatNumber, score, shorten } from './format';

const STOPS = [0, 0.25, 0.5, 0.75, 1];
/** A numeric range slider's steps from the lowest value to the highest. */
const RANGE_STEPS = 254;

/** The background similarity colours fade into (the explorer's, in either theme). */
export function background(root: Element): RGB {
  return parseColor(cssVar(root, '--jme-bg', '#ffffff'), [255, 255, 255]);
}

export class Legend {
  private readonly explorer: Explorer;
  private readonly element: HTMLElement;
  /** Takes the background from here. */
  private readonly root: HTMLElement;
  /** The category shown alone, or -1. */
  private filtered = -1;

  constructor(explorer: Explorer, element: HTMLElement, root: HTMLElement) {
    this.explorer = explorer;
    this.element = element;
    this.root = root;
  }

  /** Shows every point again (new colours). */
  resetFilter(): void {
    this.filtered = -1;
    this.explorer.map.setFilter(null);
  }

  update(): void {
    const { model, points } = this.explorer;
    const legend = this.element;
    legend.replaceChildren();
    const scores = uint8s(model.get('scores'));
    const range = model.get('score_range') || [];
    if (scores.length === points.n && points.n > 0 && range.length === 2) {
      const bg = background(this.root);
      legend.append(
        h('span', '', 'Similarity to the query'),
        h('span', 'jme-legend-value', score(range[0])),
        ramp(STOPS.map(t => css(similarity(t, bg)))),
        h('span', 'jme-legend-value', score(range[1]))
      );
      return;
    }
    const kind = model.get('color_kind');
    const palette = model.get('color_palette') || [];
    if (kind === 'numeric') {
      const [lo, hi] = model.get('color_range') || [0, 0];
      const stops = STOPS.map(t => palette[Math.round(t * 254)] ?? '#888');
      legend.append(
        h('span', '', model.get('color_by')),
        h('span', 'jme-legend-value', formatNumber(lo)),
        ramp(stops),
        h('span', 'jme-legend-value', formatNumber(hi))
      );
      if (hi > lo) {
        legend.append(this.rangeFilter(lo, hi));
      }
    } else if (kind === 'categorical') {
      const names = model.get('color_names') || [];
      const counts = model.get('color_counts') || [];
      legend.append(h('span', 'jme-legend-title', `${model.get('color_by')}:`));
      names.forEach((name, code) => {
        const item = h('button', 'jme-legend-item');
        item.type = 'button';
        item.dataset.code = String(code);
        item.title = `Show only “${name}” (${counts[code] ?? 0} points); click again to show all`;
        item.setAttribute('aria-pressed', String(this.filtered === code));
        const swatch = h('span', 'jme-swatch');
        swatch.style.background = palette[code] ?? '#888';
        item.append(
          swatch,
          h('span', '', shorten(name, 32)),
          h('span', 'jme-legend-count', (counts[code] ?? 0).toLocaleString())
        );
        item.addEventListener('click', () => this.toggle(code));
        legend.append(item);
      });
    }
  }

  /**
   * Two sliders over a numeric column's range: points outside it are greyed out (Python
   * filters them by `value_range`; the whole range means no range).
   */
  private rangeFilter(lo: number, hi: number): HTMLElement {
    const { model } = this.explorer;
    const chosen = model.get('value_range') || [];
    const box = h('span', 'jme-range');
    const shown = h('span', 'jme-legend-value');
    // Positions 0..RANGE_STEPS, the ends exactly lo and hi.
    const at = (position: number): number =>
      position <= 0 ? lo : position >= RANGE_STEPS ? hi : lo + ((hi - lo) * position) / RANGE_STEPS;
    const position = (value: number): number => Math.round(((value - lo) / (hi - lo)) * RANGE_STEPS);
    const slider = (className: string, value: number, label: string): HTMLInputElement => {
      const input = h('input', className);
      input.type = 'range';
      input.min = '0';
      input.max = String(RANGE_STEPS);
      input.step = '1';
      input.value = String(position(value));
      input.setAttribute('aria-label', label);
      return input;
    };
    const from = slider('jme-range-lo', chosen.length === 2 ? chosen[0] : lo, 'Lowest value shown');
    const to = slider('jme-range-hi', chosen.length === 2 ? chosen[1] : hi, 'Highest value shown');
    const bounds = (): [number, number] => {
      const a = Number(from.value);
      const b = Number(to.value);
      return [at(Math.min(a, b)), at(Math.max(a, b))];
    };
    const describe = (): void => {
      const [a, b] = bounds();
      shown.textContent = a <= lo && b >= hi ? 'all values' : `${formatNumber(a)} – ${formatNumber(b)}`;
    };
    const send = (): void => {
      const [a, b] = bounds();
      model.save({ value_range: a <= lo && b >= hi ? [] : [a, b] });
    };
    for (const input of [from, to]) {
      input.addEventListener('input', describe);
      input.addEventListener('change', send);
    }
    describe();
    box.append(h('span', 'jme-legend-title', 'range:'), from, to, shown);
    return box;
  }

  /** Shows category `code` alone, or every point again when it is shown alone already. */
  private toggle(code: number): void {
    this.filtered = this.filtered === code ? -1 : code;
    const map = this.explorer.map;
    if (this.filtered < 0) {
      map.setFilter(null);
    } else {
      map.setFilter(indicesWithCode(this.explorer.points.codes, code));
    }
    this.update();
  }
}
