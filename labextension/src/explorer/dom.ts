/** Small DOM helpers shared by the explorer's views. */

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

/** A toolbar button. */
export function button(label: string, className: string, title: string): HTMLButtonElement {
  const node = h('button', `jme-button ${className}`, label);
  node.type = 'button';
  node.title = title;
  return node;
}

/** A horizontal colour ramp through `stops` (CSS colours). */
export function ramp(stops: string[]): HTMLSpanElement {
  const bar = h('span', 'jme-ramp');
  bar.style.background = `linear-gradient(to right, ${stops.join(', ')})`;
  return bar;
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

/** A CSS custom property of `el` (as computed), or `fallback`. */
export function cssVar(el: Element, name: string, fallback: string): string {
  return getComputedStyle(el).getPropertyValue(name).trim() || fallback;
}
