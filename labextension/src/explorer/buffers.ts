/** Binary traits (ipywidgets hands them over as DataViews) as typed arrays, and queries over
 * them. No DOM: unit-tested in node. */

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

/** Whether two typed arrays view the same bytes (one binary trait, read twice). */
export function sameBytes(a: ArrayBufferView, b: ArrayBufferView): boolean {
  return a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.byteLength === b.byteLength;
}

/** A uint8 binary trait as a Uint8Array (no copy). */
export function uint8s(value: unknown): Uint8Array {
  const bytes = bytesOf(value);
  return bytes ? new Uint8Array(bytes.buffer, bytes.offset, bytes.length) : new Uint8Array(0);
}

/** The indices of the points whose code is `code`, in order. */
export function indicesWithCode(codes: Uint8Array, code: number): number[] {
  const picked: number[] = [];
  for (let i = 0; i < codes.length; i++) {
    if (codes[i] === code) {
      picked.push(i);
    }
  }
  return picked;
}
