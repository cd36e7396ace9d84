/**
 * An explorer of pictures shows them on the map at the closest zooms: once the view rests
 * with few enough points in it (`PICTURES_IN_VIEW`), each becomes its thumbnail, centred on
 * the point; while the view moves the pictures follow it, and a wider view hides them. The
 * thumbnails are fetched for the points in view only (`ThumbnailCache`), never all at once.
 */

import { h } from './dom';
import type { ScatterMap } from './scatter';
import type { ThumbnailCache } from './thumbnails';

/** Most points in view for pictures to replace them. */
export const PICTURES_IN_VIEW = 120;
/** Milliseconds the view must rest before the points in view are looked up. */
const REST_MS = 120;

export class PictureLayer {
  readonly element: HTMLDivElement;
  private readonly map: ScatterMap;
  private readonly thumbnails: ThumbnailCache;
  /** Pictures on the map, by point index. */
  private readonly shown = new Map<number, HTMLImageElement>();
  private timer = 0;
  private frame = 0;
  /** Bumped at each look-up: an answer for an older view is dropped. */
  private generation = 0;

  constructor(map: ScatterMap, thumbnails: ThumbnailCache) {
    this.map = map;
    this.thumbnails = thumbnails;
    this.element = h('div', 'jme-pictures');
    map.element.append(this.element);
  }

  /** The view moved: the pictures follow it now, and are looked up again once it rests. */
  viewChanged(): void {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.place();
      });
    }
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.lookUp(), REST_MS);
  }

  destroy(): void {
    window.clearTimeout(this.timer);
    cancelAnimationFrame(this.frame);
    this.element.remove();
  }

  private lookUp(): void {
    const generation = ++this.generation;
    const inView = this.map.pointsInView(PICTURES_IN_VIEW);
    if (!inView || !inView.length) {
      this.clear();
      return;
    }
    void this.thumbnails.fetch(inView).then(urls => {
      if (generation !== this.generation) {
        return;
      }
      for (const [index, img] of [...this.shown]) {
        if (!urls.get(index)) {
          img.remove();
          this.shown.delete(index);
        }
      }
      for (const [index, url] of urls) {
        if (!url || this.shown.has(index)) {
          continue;
        }
        const img = h('img', 'jme-picture');
        img.src = url;
        img.alt = '';
        img.dataset.index = String(index);
        this.shown.set(index, img);
        this.element.append(img);
      }
      this.element.dataset.count = String(this.shown.size);
      this.place();
    });
  }

  private place(): void {
    for (const [index, img] of this.shown) {
      const [x, y] = this.map.screenPosition(index);
      img.style.transform = `translate(${x.toFixed(1)}px, ${y.toFixed(1)}px) translate(-50%, -50%)`;
    }
  }

  private clear(): void {
    for (const img of this.shown.values()) {
      img.remove();
    }
    this.shown.clear();
    this.element.dataset.count = '0';
  }
}
