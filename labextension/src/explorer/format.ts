/** Text formatting shared by the explorer's views. No DOM: unit-tested in node. */

/** `text` on one line, cut to `width` characters with an ellipsis. */
export function shorten(text: string, width: number): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length <= width ? line : line.slice(0, width - 1).trimEnd() + '…';
}

/** Formats a cosine similarity. */
export function score(value: number): string {
  return value.toFixed(3);
}

/** Formats a numeric column's bound (legend): three decimals, or exponents when far from 1. */
export function formatNumber(value: number): string {
  return Math.abs(value) >= 1e5 || (value !== 0 && Math.abs(value) < 1e-3)
    ? value.toExponential(2)
    : String(Math.round(value * 1000) / 1000);
}

/** A similarity stored as a score code (0..254 across `range`), back as a number. */
export function scoreOfCode(code: number, range: readonly number[]): number {
  return range[0] + (code / 254) * (range[1] - range[0]);
}
