/**
 * The map's hover tooltip: the point's text and tooltip columns (fetched on demand), its
 * index, its category and its similarity to the query; for a picture, its thumbnail first
 * (performance mark "jme-thumbnail" once it is shown).
 */

import { uint8s } from './buffers';
import type { Explorer } from './context';
import { h, placeTooltip } from './dom';
import { score, scoreOfCode, shorten } from './format';

export class PointTooltip {
  private readonly explorer: Explorer;
  private readonly tip: HTMLElement;
  /** The point under the pointer, or -1: an answer for another point is dropped. */
  private hovered = -1;

  constructor(explorer: Explorer, tip: HTMLElement) {
    this.explorer = explorer;
    this.tip = tip;
  }

  /** The pointer is over point `index` (-1: none) at (x, y) in the map box. */
  show(index: number, x: number, y: number): void {
    const { model, points, rows, map, thumbnails } = this.explorer;
    const tip = this.tip;
    this.hovered = index;
    if (index < 0) {
      tip.style.display = 'none';
      return;
    }
    const picture = thumbnails ? thumbnails.fetch([index]) : Promise.resolve(new Map<number, string>());
    void Promise.all([rows.fetch([index]), picture]).then(([[row], urls]) => {
      if (this.hovered !== index || !row) {
        return;
      }
      const { n, codes } = points;
      const parts: HTMLElement[] = [];
      const url = urls.get(index);
      if (url) {
        const img = h('img', 'jme-tip-picture');
        img.alt = '';
        img.src = url;
        void img.decode().then(
          () => performance.mark('jme-thumbnail'),
          () => undefined
        );
        parts.push(img);
      }
      parts.push(h('div', 'jme-tip-text', shorten(row.text, 300)));
      for (const [name, value] of Object.entries(row.fields)) {
        const field = h('div', 'jme-tip-field');
        field.append(h('span', 'jme-tip-name', `${name}: `), document.createTextNode(shorten(value, 80)));
        parts.push(field);
      }
      const extra: string[] = [`#${index}`];
      const names = model.get('color_names') || [];
      if (model.get('color_kind') === 'categorical' && codes.length === n && names[codes[index]] !== undefined) {
        extra.push(`${model.get('color_by')}: ${names[codes[index]]}`);
      }
      const scores = uint8s(model.get('scores'));
      const range = model.get('score_range') || [];
      if (scores.length === n && range.length === 2) {
        extra.push(`similarity ≈ ${score(scoreOfCode(scores[index], range))}`);
      }
      parts.push(h('div', 'jme-tip-meta', extra.join(' · ')));
      tip.replaceChildren(...parts);
      placeTooltip(tip, map.element, x, y);
    });
  }
}
