/**
 * The toolbar: the map's tools (pan, lasso, box; one pressed at a time), reset view, the
 * colour menu (hook: select.jme-color) and the cluster labels switch (.jme-cluster-toggle).
 */

import { uint8s } from './buffers';
import type { Explorer } from './context';
import { h } from './dom';
import type { Layout } from './layout';
import type { Mode } from './scatter';

export class Toolbar {
  private readonly explorer: Explorer;
  private readonly layout: Layout;

  constructor(explorer: Explorer, layout: Layout) {
    this.explorer = explorer;
    this.layout = layout;
    const { model, map } = explorer;
    const { colorSelect, clusterBox, panButton, lassoButton, boxButton, resetButton } = layout;
    colorSelect.addEventListener('change', () => model.save({ color_by: colorSelect.value }));
    layout.sizeSelect.addEventListener('change', () => model.save({ size_by: layout.sizeSelect.value }));
    layout.opacitySelect.addEventListener('change', () => model.save({ opacity_by: layout.opacitySelect.value }));
    clusterBox.addEventListener('change', () => map.setClustersVisible(clusterBox.checked));
    layout.densityBox.addEventListener('change', () => model.save({ density: layout.densityBox.checked }));
    panButton.addEventListener('click', () => this.setMode('pan'));
    lassoButton.addEventListener('click', () => this.setMode('lasso'));
    boxButton.addEventListener('click', () => this.setMode('box'));
    resetButton.addEventListener('click', () => map.resetView());
  }

  setMode(mode: Mode): void {
    const { panButton, lassoButton, boxButton } = this.layout;
    this.explorer.map.setMode(mode);
    panButton.setAttribute('aria-pressed', String(mode === 'pan'));
    lassoButton.setAttribute('aria-pressed', String(mode === 'lasso'));
    boxButton.setAttribute('aria-pressed', String(mode === 'box'));
  }

  /** `color_options` or `color_by` changed. */
  updateColorSelect(): void {
    const model = this.explorer.model;
    columnMenu(
      this.layout.colorSelect,
      model.get('color_options') || [],
      model.get('color_by') || '',
      'colour',
      'none'
    );
  }

  /** `size_by`, `opacity_by`, `size_options` or `scale_codes` changed. */
  updateScale(): void {
    const { model, map } = this.explorer;
    const options = model.get('size_options') || [];
    const size = model.get('size_by') || '';
    const opacity = model.get('opacity_by') || '';
    columnMenu(this.layout.sizeSelect, options, size, 'size', 'same');
    columnMenu(this.layout.opacitySelect, options, opacity, 'opacity', 'density');
    const codes = uint8s(model.get('scale_codes'));
    map.setScale(codes.length ? { codes, size: Boolean(size), opacity: Boolean(opacity) } : null);
  }

  /** `density` or `contours` changed. */
  updateDensity(): void {
    const { model, map } = this.explorer;
    this.layout.densityBox.checked = Boolean(model.get('density'));
    map.setContours(model.get('density') ? model.get('contours') || [] : []);
  }

  /** `clusters` changed: the switch shows only when there are labels to switch. */
  updateClusters(): void {
    const clusters = this.explorer.model.get('clusters') || [];
    this.explorer.map.setClusters(clusters);
    this.layout.clusterToggle.style.display = clusters.length ? '' : 'none';
  }
}

/** A menu of columns (`what: name`, and `what: none` first); hidden when there are none. */
function columnMenu(
  select: HTMLSelectElement,
  options: readonly string[],
  chosen: string,
  what: string,
  none: string
): void {
  select.style.display = options.length ? '' : 'none';
  select.replaceChildren(
    ...['', ...options].map(name => {
      const option = h('option', '', `${what}: ${name || none}`);
      option.value = name;
      option.selected = name === chosen;
      return option;
    })
  );
}
