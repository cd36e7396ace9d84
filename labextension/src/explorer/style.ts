/**
 * The explorer's CSS, injected once per document. JupyterLab's theme variables first, then
 * VS Code's, then plain colours (Notebook 7 has JupyterLab's).
 */

const STYLE_ID = 'jupyter-mlx-embed-explorer-style';

const CSS = `
.jme-explorer {
  --jme-fg: var(--jp-ui-font-color1, var(--vscode-editor-foreground, #1f2328));
  --jme-fg2: var(--jp-ui-font-color2, var(--vscode-descriptionForeground, #59636e));
  --jme-bg: var(--jp-layout-color1, var(--vscode-editor-background, #ffffff));
  --jme-bg2: var(--jp-layout-color2, var(--vscode-editorWidget-background, #f3f4f6));
  --jme-border: var(--jp-border-color2, var(--vscode-editorWidget-border, #d8dde3));
  --jme-accent: var(--jp-brand-color1, var(--vscode-focusBorder, #1976d2));
  --jme-error: var(--jp-error-color1, var(--vscode-errorForeground, #d32f2f));
  --jme-warn: var(--jp-warn-color1, var(--vscode-editorWarning-foreground, #f57c00));
  /* Marks on the map: distinct from each other and from the point palettes, readable on
     light and dark backgrounds (no yellow). */
  --jme-hit: #d81b60;
  --jme-neighbor: #00897b;
  --jme-selected: var(--jme-fg);
  font-family: var(--jp-ui-font-family, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px);
  line-height: 1.4;
  color: var(--jme-fg);
  background: var(--jme-bg);
  border: 1px solid var(--jme-border);
  border-radius: 8px;
  padding: 12px 14px 8px;
  display: flex;
  flex-direction: column;
  gap: 10px;
  min-width: 0;
  max-width: 100%;
  box-sizing: border-box;
}
.jme-explorer *, .jme-explorer *::before, .jme-explorer *::after { box-sizing: border-box; }
.jme-header { display: flex; align-items: center; justify-content: space-between; gap: 8px 16px; flex-wrap: wrap; }
.jme-title { font-weight: 600; font-size: var(--jp-ui-font-size2, 14px); }
.jme-meta { color: var(--jme-fg2); font-size: var(--jp-ui-font-size0, 11px); margin-left: 8px; font-weight: normal; }
.jme-toolbar { display: flex; gap: 4px; flex-wrap: wrap; }
.jme-button {
  font: inherit; font-size: var(--jp-ui-font-size0, 12px); color: var(--jme-fg);
  background: var(--jme-bg2); border: 1px solid var(--jme-border); border-radius: 4px;
  padding: 2px 10px; line-height: 20px; cursor: pointer;
}
.jme-button:hover:not(:disabled) { border-color: var(--jme-accent); }
.jme-button:disabled { opacity: 0.5; cursor: default; }
.jme-button:focus-visible { outline: 2px solid var(--jme-accent); outline-offset: 1px; }
.jme-button[aria-pressed="true"] {
  background: var(--jme-accent); border-color: var(--jme-accent);
  color: var(--jp-ui-inverse-font-color1, #ffffff);
}
.jme-filter-row:empty { display: none; }
.jme-filter-bar { display: flex; align-items: center; gap: 6px 10px; flex-wrap: wrap; font-size: var(--jp-ui-font-size0, 12px); color: var(--jme-fg2); }
input.jme-keyword {
  flex: 0 1 260px; min-width: 140px; font: inherit; color: var(--jme-fg);
  background: var(--jp-input-background, var(--vscode-input-background, var(--jme-bg)));
  border: 1px solid var(--jp-input-border-color, var(--vscode-input-border, var(--jme-border)));
  border-radius: 4px; padding: 3px 8px; outline: none;
}
input.jme-keyword:focus { border-color: var(--jme-accent); box-shadow: 0 0 0 1px var(--jme-accent); }
.jme-filter-chip { display: inline-flex; align-items: center; gap: 4px; max-width: 320px; padding: 1px 2px 1px 8px; border-radius: 10px; background: var(--jme-bg2); border: 1px solid var(--jme-border); color: var(--jme-fg); }
.jme-filter-chip[hidden], .jme-search-filtered-label[hidden] { display: none; }
.jme-filter-expr { font-family: var(--jp-code-font-family, monospace); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.jme-filter-chip .jme-button { padding: 0 6px; line-height: 16px; border-radius: 8px; }
.jme-filter-count { font-variant-numeric: tabular-nums; }
.jme-search-filtered-label { display: inline-flex; align-items: center; gap: 3px; cursor: pointer; }
.jme-range { display: inline-flex; align-items: center; gap: 4px; margin-left: 6px; }
.jme-range input[type="range"] { width: 90px; }
.jme-static .jme-side, .jme-static .jme-heatmap, .jme-static .jme-mode-lasso, .jme-static .jme-mode-box,
.jme-static select.jme-color, .jme-static select.jme-size, .jme-static .jme-range, .jme-static .jme-filter-chip,
.jme-static .jme-search-filtered-label, .jme-static .jme-keys { display: none; }
.jme-explorer.jme-static .jme-body { grid-template-columns: minmax(0, 1fr); }
.jme-body { display: grid; grid-template-columns: minmax(0, 1fr) minmax(240px, 330px); gap: 14px; align-items: start; }
.jme-explorer.jme-narrow .jme-body { grid-template-columns: minmax(0, 1fr); }
.jme-left, .jme-side { min-width: 0; }
.jme-side { display: flex; flex-direction: column; gap: 8px; }
.jme-map-box {
  position: relative; overflow: hidden; border: 1px solid var(--jme-border); border-radius: 6px;
  background: var(--jme-bg); color: var(--jme-fg); height: 440px;
  user-select: none; -webkit-user-select: none; /* a drag on the map selects points, not text */
}
canvas.jme-map { position: absolute; inset: 0; display: block; width: 100%; height: 100%; cursor: grab; touch-action: none; outline: none; }
.jme-map-box[data-mode="lasso"] canvas.jme-map, .jme-map-box[data-mode="box"] canvas.jme-map { cursor: crosshair; }
canvas.jme-overlay, canvas.jme-points { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none; }
.jme-pictures { position: absolute; inset: 0; overflow: hidden; pointer-events: none; }
img.jme-picture { position: absolute; left: 0; top: 0; max-width: 56px; max-height: 56px; border: 1px solid var(--jme-border); border-radius: 3px; background: var(--jme-bg); box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
img.jme-tip-picture { display: block; max-width: 160px; max-height: 120px; margin-bottom: 4px; border-radius: 3px; }
img.jme-hit-picture { float: left; width: 40px; height: 40px; object-fit: cover; margin-right: 6px; border-radius: 3px; }
.jme-wheel-hint {
  position: absolute; left: 50%; top: 50%; transform: translate(-50%, -50%); z-index: 4;
  padding: 6px 12px; border-radius: 4px; background: rgba(0, 0, 0, 0.7); color: #fff;
  font-size: 12px; pointer-events: none; opacity: 0; transition: opacity 0.2s;
}
.jme-wheel-hint.jme-visible { opacity: 1; }
.jme-map-status { margin-top: 4px; font-size: 11px; color: var(--jme-fg2); }
.jme-keys { display: flex; flex-wrap: wrap; gap: 2px 10px; }
.jme-key { display: inline-flex; align-items: center; gap: 4px; }
.jme-key-mark { width: 12px; height: 12px; display: inline-block; flex: none; box-sizing: border-box; }
.jme-key-hit { border: 2px solid var(--jme-hit); border-radius: 50%; }
.jme-key-neighbor { border: 2px solid var(--jme-neighbor); transform: rotate(45deg) scale(0.8); }
.jme-key-clicked { border: 2.5px solid var(--jme-fg); border-radius: 50%; box-shadow: 0 0 0 2px var(--jme-bg); }
.jme-key-selected { background: radial-gradient(circle, var(--jme-fg2) 0 30%, var(--jme-bg) 31% 50%, var(--jme-fg2) 51%); border-radius: 50%; transform: scale(0.8); }
.jme-tip-field { color: var(--jme-fg); font-size: 11px; }
.jme-tip-name { color: var(--jme-fg2); }
.jme-legend-title { color: var(--jme-fg2); }
.jme-legend-item[aria-pressed="true"] { background: var(--jme-bg2); outline: 1px solid var(--jme-accent); }
.jme-rank {
  display: inline-block; min-width: 16px; margin-right: 6px; padding: 0 3px; border-radius: 3px;
  background: var(--jme-hit); color: #fff; text-align: center; font-weight: 600;
}
select.jme-color, select.jme-size {
  font: inherit; font-size: var(--jp-ui-font-size0, 12px); color: var(--jme-fg); max-width: 160px;
  background: var(--jme-bg2); border: 1px solid var(--jme-border); border-radius: 4px; padding: 2px;
}
.jme-cluster-toggle, .jme-density-toggle { display: inline-flex; align-items: center; gap: 2px; font-size: var(--jp-ui-font-size0, 12px); color: var(--jme-fg); }
.jme-tip {
  position: absolute; display: none; pointer-events: none; z-index: 5; max-width: 320px;
  padding: 6px 8px; border-radius: 4px; font-size: 12px; line-height: 1.35;
  color: var(--jme-fg);
  background: var(--jp-layout-color0, var(--vscode-editorHoverWidget-background, #ffffff));
  border: 1px solid var(--jme-border); box-shadow: 0 2px 10px rgba(0, 0, 0, 0.18);
  overflow-wrap: anywhere; white-space: normal;
}
.jme-tip-meta { display: flex; gap: 6px; align-items: center; margin-top: 4px; color: var(--jme-fg2); font-size: 11px; }
.jme-tip-vs { color: var(--jme-fg2); text-align: center; font-size: 11px; }
.jme-tip-score { font-variant-numeric: tabular-nums; }
.jme-under-map { display: flex; justify-content: space-between; align-items: flex-start; gap: 4px 12px; flex-wrap: wrap; margin-top: 6px; font-size: 11px; color: var(--jme-fg2); }
.jme-legend { display: flex; flex-wrap: wrap; align-items: center; gap: 2px 6px; min-width: 0; }
.jme-legend-item {
  display: inline-flex; align-items: center; gap: 5px; padding: 1px 5px; border-radius: 3px;
  border: none; background: none; font: inherit; color: var(--jme-fg); cursor: pointer;
}
.jme-legend-item:hover { background: var(--jme-bg2); }
.jme-legend-count { color: var(--jme-fg2); }
.jme-swatch { width: 10px; height: 10px; border-radius: 50%; display: inline-block; flex: none; }
.jme-ramp { display: inline-block; width: 110px; height: 8px; border-radius: 4px; margin: 0 4px; vertical-align: middle; }
.jme-legend-value { font-variant-numeric: tabular-nums; color: var(--jme-fg); }
.jme-hint { opacity: 0.85; font-size: 11px; color: var(--jme-fg2); margin-top: 2px; }
.jme-search { display: flex; gap: 6px; align-items: center; }
.jme-query-wrap { position: relative; flex: 1; min-width: 0; display: flex; }
input.jme-query {
  flex: 1; min-width: 0; font: inherit; color: var(--jme-fg);
  background: var(--jp-input-background, var(--vscode-input-background, var(--jme-bg)));
  border: 1px solid var(--jp-input-border-color, var(--vscode-input-border, var(--jme-border)));
  border-radius: 4px; padding: 5px 28px 5px 8px; outline: none;
}
input.jme-query:focus { border-color: var(--jme-accent); box-shadow: 0 0 0 1px var(--jme-accent); }
input.jme-query::placeholder { color: var(--jme-fg2); opacity: 0.8; }
@keyframes jme-spin { to { transform: rotate(360deg); } }
.jme-spinner {
  position: absolute; right: 8px; top: 50%; width: 12px; height: 12px; margin-top: -6px;
  border: 2px solid var(--jme-border); border-top-color: var(--jme-accent); border-radius: 50%;
  animation: jme-spin 0.8s linear infinite; display: none;
}
.jme-busy .jme-spinner { display: block; }
select.jme-k {
  font: inherit; font-size: var(--jp-ui-font-size0, 12px); color: var(--jme-fg);
  background: var(--jme-bg2); border: 1px solid var(--jme-border); border-radius: 4px; padding: 4px 2px;
}
.jme-rerank-label {
  display: flex; align-items: center; gap: 3px; font-size: var(--jp-ui-font-size0, 12px);
  color: var(--jme-fg2); white-space: nowrap; cursor: pointer;
}
.jme-rerank-label[hidden] { display: none; }
.jme-cosine { display: block; font-size: 10px; color: var(--jme-fg2); opacity: 0.85; }
.jme-section {
  display: flex; justify-content: space-between; align-items: baseline; gap: 8px;
  font-size: 11px; font-weight: 600; letter-spacing: 0.04em; text-transform: uppercase;
  color: var(--jme-fg2); margin-top: 2px;
}
.jme-caption { font-size: 12px; color: var(--jme-fg2); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
table.jme-table { width: 100%; border-collapse: collapse; table-layout: fixed; font-size: 12px; }
.jme-table td { padding: 4px 6px; border-top: 1px solid var(--jme-border); vertical-align: top; }
.jme-table tr:first-child td { border-top: none; }
tr.jme-hit, tr.jme-neighbor { cursor: pointer; }
tr.jme-hit:hover, tr.jme-neighbor:hover, tr.jme-current { background: var(--jme-bg2); }
.jme-clamp { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; overflow-wrap: anywhere; }
td.jme-score { width: 72px; text-align: right; font-variant-numeric: tabular-nums; color: var(--jme-fg2); }
.jme-bar { height: 3px; margin-top: 4px; border-radius: 2px; background: var(--jme-bg2); overflow: hidden; }
.jme-bar > span { display: block; height: 100%; background: var(--jme-accent); }
tr.jme-empty td { color: var(--jme-fg2); font-style: italic; padding: 6px; }
.jme-selection { display: flex; align-items: center; justify-content: space-between; gap: 8px; font-size: 12px; color: var(--jme-fg2); min-height: 26px; }
.jme-heatmap { border-top: 1px solid var(--jme-border); padding-top: 8px; }
.jme-heatmap-head { display: flex; align-items: baseline; gap: 4px 12px; flex-wrap: wrap; cursor: pointer; list-style: none; }
.jme-heatmap-head::-webkit-details-marker { display: none; }
.jme-heatmap-head::before { content: "▸"; color: var(--jme-fg2); font-size: 10px; }
.jme-heatmap[open] > .jme-heatmap-head::before { content: "▾"; }
.jme-heatmap-key { display: inline-flex; align-items: center; gap: 4px; font-size: 11px; color: var(--jme-fg2); }
.jme-heatmap-note { font-size: 11px; color: var(--jme-fg2); }
.jme-heatmap-box { position: relative; overflow-x: auto; margin-top: 6px; color: var(--jme-fg); }
canvas.jme-heatmap-canvas { display: block; cursor: crosshair; }
.jme-status {
  border-top: 1px solid var(--jme-border); padding-top: 6px; min-height: 1.6em;
  font-size: 11px; color: var(--jme-fg2); white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
}
.jme-status[data-level="error"] { color: var(--jme-error); font-weight: 600; }
.jme-status[data-level="busy"] { color: var(--jme-fg); }
`;

/** Adds the stylesheet to `root`'s document (once). */
export function injectStyle(root: Node): void {
  const doc = root.ownerDocument ?? document;
  if (doc.getElementById(STYLE_ID)) {
    return;
  }
  const style = doc.createElement('style');
  style.id = STYLE_ID;
  style.textContent = CSS;
  doc.head.appendChild(style);
}
