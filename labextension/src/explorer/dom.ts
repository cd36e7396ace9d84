/** Small DOM and buffer helpers shared by the explorer's views. */

/** Creates an element with a class and optional text (text is never parsed as HTML). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** `text` on one line, cut to `width` characters with an ellipsis. */
export function shorten(text: string, width: number): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length <= width ? line : line.slice(0, width - 1).trimEnd() + '…';
}

/** Bytes of a binary trait (a DataView from ipywidgets, or a buffer), else null. */
function bytesOf(value: unknown): { buffer: ArrayBufferLike; offset: number; length: number } | null {
  if (value instanceof DataView || ArrayBuffer.isView(value)) {
    const view = value as ArrayBufferView;
    return { buffer: view.buffer, offset: view.byteOffset, length: view.byteLength };
  }
  if (value instanceof ArrayBuffer) {
    return { buffer: value, offset: 0, length: value.byteLength };
  }
  return null;
}

/** A little-endian float32 binary trait as a Float32Array (no copy when aligned). */
export function float32s(value: unknown): Float32Array {
  const bytes = bytesOf(value);
  if (!bytes) {
    return new Float32Array(0);
  }
  const count = Math.floor(bytes.length / 4);
  if (bytes.offset % 4 === 0) {
    return new Float32Array(bytes.buffer, bytes.offset, count);
  }
  return new Float32Array(bytes.buffer.slice(bytes.offset, bytes.offset + count * 4));
}

/** A little-endian int32 binary trait as an Int32Array (no copy when aligned). */
export function int32s(value: unknown): Int32Array {
  const bytes = bytesOf(value);
  if (!bytes) {
    return new Int32Array(0);
  }
  const count = Math.floor(bytes.length / 4);
  if (bytes.offset % 4 === 0) {
    return new Int32Array(bytes.buffer, bytes.offset, count);
  }
  return new Int32Array(bytes.buffer.slice(bytes.offset, bytes.offset + count * 4));
}

/** Formats a cosine similarity. */
export function score(value: number): string {
  return value.toFixed(3);
}

/** Places a floating tooltip next to (x, y) inside `box`, flipping at the edges. */
export function placeTooltip(tip: HTMLElement, box: HTMLElement, x: number, y: number): void {
  tip.style.display = 'block';
  const pad = 14;
  const w = tip.offsetWidth;
  const hgt = tip.offsetHeight;
  const left = x + pad + w > box.clientWidth ? Math.max(0, x - pad - w) : x + pad;
  const top = y + pad + hgt > box.clientHeight ? Math.max(0, y - pad - hgt) : y + pad;
  tip.style.left = `${left}px`;
  tip.style.top = `${top}px`;
}
