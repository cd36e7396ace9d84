/** Greedy placement of text labels on the map: earlier labels win, later ones that would
 * overlap a placed one try other spots and are hidden when none is free. */

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

export function overlaps(a: Box, b: Box): boolean {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

/**
 * The first of `candidates` that stays inside `width` x `height` and overlaps nothing in
 * `taken` (which it joins), or null.
 */
export function place(candidates: readonly Box[], taken: Box[], width: number, height: number): Box | null {
  for (const box of candidates) {
    if (box.x < 0 || box.y < 0 || box.x + box.w > width || box.y + box.h > height) {
      continue;
    }
    if (taken.some(other => overlaps(box, other))) {
      continue;
    }
    taken.push(box);
    return box;
  }
  return null;
}

/**
 * Where a query hit's rank label (`w` x `h`) may go, in order of preference: beside the
 * ring (radius 7) around the point at (x, y), above right, above left, below right, below
 * left.
 */
export function rankSpots(x: number, y: number, w: number, h: number): Box[] {
  return [
    { x: x + 8, y: y - h - 2, w, h },
    { x: x - 8 - w, y: y - h - 2, w, h },
    { x: x + 8, y: y + 2, w, h },
    { x: x - 8 - w, y: y + 2, w, h }
  ];
}

/**
 * Where a cluster label (`w` wide) goes: centred on the cluster's centre (x, y), moved
 * inside a `width` x `height` view where it would stick out (a cluster at the edge).
 */
export function clusterSpot(x: number, y: number, w: number, width = Infinity, height = Infinity): Box {
  const h = 18;
  return {
    x: Math.max(0, Math.min(x - w / 2, width - w)),
    y: Math.max(0, Math.min(y - h / 2, height - h)),
    w,
    h
  };
}
