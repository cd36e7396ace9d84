/**
 * Pictures' thumbnails on demand (an explorer of pictures): the ones Python sent are kept
 * (as JPEG bytes, turned into URLs by the caller's `toUrl`), missing ones are asked for with
 * a `ThumbnailsRequest` and arrive as the `ThumbnailsAnswer` of the same id, with one buffer
 * holding the JPEGs one after the other. The least recently used are dropped past `limit`
 * (their URLs released). No DOM: unit-tested in node.
 */

import type { ThumbnailsAnswer, ThumbnailsRequest } from './protocol';

/** What a thumbnail's bytes become: an object URL in the browser. */
export interface UrlMaker {
  create(bytes: Uint8Array): string;
  release(url: string): void;
}

export class ThumbnailCache {
  private readonly send: (request: ThumbnailsRequest) => void;
  private readonly urls: UrlMaker;
  private readonly limit: number;
  /** Index -> URL ('' for a picture Python could not read), least recently used first. */
  private readonly kept = new Map<number, string>();
  /** Requests waiting, each for its indices to be answered. */
  private readonly waiting: { indices: readonly number[]; done: () => void }[] = [];
  /** Indices asked for and not yet answered (not asked again meanwhile). */
  private readonly asked = new Set<number>();
  private nextRequest = 1;

  constructor(send: (request: ThumbnailsRequest) => void, urls: UrlMaker, limit = 2000) {
    this.send = send;
    this.urls = urls;
    this.limit = limit;
  }

  /** The URL of `index`'s thumbnail if it is here ('' for an unreadable picture), else undefined. */
  peek(index: number): string | undefined {
    const url = this.kept.get(index);
    if (url !== undefined) {
      this.kept.delete(index);
      this.kept.set(index, url);
    }
    return url;
  }

  /**
   * The thumbnails' URLs of `indices` (index -> URL, '' for unreadable ones): at once when all
   * are here, else once Python answered.
   */
  fetch(indices: readonly number[]): Promise<Map<number, string>> {
    const missing = [...new Set(indices.filter(i => !this.kept.has(i) && !this.asked.has(i)))];
    const collect = (): Map<number, string> => {
      const found = new Map<number, string>();
      for (const i of indices) {
        const url = this.peek(i);
        if (url !== undefined) {
          found.set(i, url);
        }
      }
      return found;
    };
    if (indices.every(i => this.kept.has(i))) {
      return Promise.resolve(collect());
    }
    missing.forEach(i => this.asked.add(i));
    const answered = new Promise<Map<number, string>>(resolve => {
      this.waiting.push({ indices, done: () => resolve(collect()) });
    });
    if (missing.length) {
      // Indices already asked for by an earlier request are waited for, not asked again.
      this.send({ type: 'thumbnails', id: this.nextRequest++, indices: missing });
    }
    return answered;
  }

  /** Takes a custom message and its buffers: keeps the thumbnails of an answer. */
  receive(message: unknown, buffers: readonly (DataView | ArrayBuffer)[] = []): void {
    const content = message as Partial<ThumbnailsAnswer> | null | undefined;
    if (content?.type !== 'thumbnails' || content.id === undefined) {
      return;
    }
    const indices = content.indices ?? [];
    const sizes = content.sizes ?? [];
    const data = bufferBytes(buffers[0]);
    let offset = 0;
    indices.forEach((index, k) => {
      const size = sizes[k] ?? 0;
      this.asked.delete(index);
      if (!this.kept.has(index)) {
        this.kept.set(index, size > 0 ? this.urls.create(data.subarray(offset, offset + size)) : '');
      }
      offset += size;
    });
    // Answers may come in any order: a request is done once none of its indices is awaited.
    for (const request of this.waiting.splice(0)) {
      if (request.indices.some(i => this.asked.has(i))) {
        this.waiting.push(request);
      } else {
        request.done();
      }
    }
    this.trim();
  }

  /** Releases every URL. */
  dispose(): void {
    for (const url of this.kept.values()) {
      if (url) {
        this.urls.release(url);
      }
    }
    this.kept.clear();
  }

  private trim(): void {
    while (this.kept.size > this.limit) {
      const [index, url] = this.kept.entries().next().value as [number, string];
      this.kept.delete(index);
      if (url) {
        this.urls.release(url);
      }
    }
  }
}

function bufferBytes(buffer: DataView | ArrayBuffer | undefined): Uint8Array {
  if (!buffer) {
    return new Uint8Array(0);
  }
  if (buffer instanceof ArrayBuffer) {
    return new Uint8Array(buffer);
  }
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
