/**
 * The side panel's tables: the query's best matches (hooks: table.jme-topk > tr.jme-hit,
 * first cell the text) and the clicked point's nearest neighbours (table.jme-neighbors >
 * tr.jme-neighbor). Hovering a row points at its point on the map; clicking it clicks it.
 * For pictures, each row shows its thumbnail (img.jme-hit-picture), fetched for those rows.
 */

import type { Explorer } from './context';
import { h } from './dom';
import { score, shorten } from './format';
import type { Hit } from './protocol';

export class HitTables {
  private readonly explorer: Explorer;
  private readonly topkTable: HTMLTableElement;
  private readonly neighborCaption: HTMLElement;
  private readonly neighborTable: HTMLTableElement;

  constructor(
    explorer: Explorer,
    topkTable: HTMLTableElement,
    neighborCaption: HTMLElement,
    neighborTable: HTMLTableElement
  ) {
    this.explorer = explorer;
    this.topkTable = topkTable;
    this.neighborCaption = neighborCaption;
    this.neighborTable = neighborTable;
  }

  updateTopk(): void {
    const { model, thumbnails } = this.explorer;
    const hasQuery = (model.get('query') || '').trim() !== '';
    const noun = thumbnails ? 'pictures' : 'texts';
    this.fill(
      this.topkTable,
      model.get('top_k') || [],
      'jme-hit',
      hasQuery ? 'No matches yet.' : `Type a query to rank the ${noun} by meaning.`,
      true
    );
  }

  updateNeighbors(): void {
    const { model, points, rows } = this.explorer;
    const caption = this.neighborCaption;
    const clicked = model.get('clicked');
    const valid = clicked >= 0 && clicked < points.n;
    caption.textContent = valid ? `of #${clicked}` : '';
    if (valid) {
      void rows.fetch([clicked]).then(([row]) => {
        if (row && model.get('clicked') === clicked) {
          caption.textContent = `of #${clicked}: ${shorten(row.text, 80)}`;
          caption.title = row.text;
        }
      });
    }
    this.fill(
      this.neighborTable,
      model.get('neighbors') || [],
      'jme-neighbor',
      'Click a point to list its neighbours.',
      false
    );
  }

  private fill(table: HTMLTableElement, hits: Hit[], rowClass: string, empty: string, ranked: boolean): void {
    const { map, model, thumbnails } = this.explorer;
    const tbody = h('tbody');
    const pictures = new Map<number, HTMLImageElement>();
    if (!hits.length) {
      const row = h('tr', 'jme-empty');
      const cell = h('td', '', empty);
      cell.colSpan = 2;
      row.append(cell);
      tbody.append(row);
    }
    hits.forEach((hit, rank) => {
      const row = h('tr', rowClass);
      row.dataset.index = String(hit.index);
      row.title = `#${hit.index}: ${hit.text}`;
      const textCell = h('td', 'jme-text');
      if (thumbnails) {
        const img = h('img', 'jme-hit-picture');
        img.alt = '';
        pictures.set(hit.index, img);
        textCell.append(img);
      }
      textCell.append(h('div', 'jme-clamp', hit.text));
      const scoreCell = h('td', 'jme-score');
      if (ranked) {
        scoreCell.append(h('span', 'jme-rank', String(rank + 1)));
      }
      scoreCell.append(document.createTextNode(score(hit.score)));
      if (hit.similarity !== undefined) {
        const cosine = h('span', 'jme-cosine', `cos ${score(hit.similarity)}`);
        cosine.title = 'Similarity to the query (the reranker ranked this match)';
        scoreCell.append(cosine);
      }
      const bar = h('div', 'jme-bar');
      const fill = h('span');
      fill.style.width = `${Math.round(Math.max(0, Math.min(1, hit.score)) * 100)}%`;
      bar.append(fill);
      scoreCell.append(bar);
      row.append(textCell, scoreCell);
      row.addEventListener('mouseenter', () => map.setMarks({ pointed: [hit.index] }));
      row.addEventListener('mouseleave', () => map.setMarks({ pointed: [] }));
      row.addEventListener('click', () => model.save({ clicked: hit.index }));
      tbody.append(row);
    });
    table.replaceChildren(tbody);
    if (thumbnails && pictures.size) {
      void thumbnails.fetch([...pictures.keys()]).then(urls => {
        for (const [index, img] of pictures) {
          const url = urls.get(index);
          if (url) {
            img.src = url;
          }
        }
      });
    }
  }
}
