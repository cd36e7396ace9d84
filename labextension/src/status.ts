/**
 * The embedding worker's status: polling `GET mlx-embed/status`, turning an answer into what
 * the status bar shows, and the status-bar widget itself.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

/** Body of `GET mlx-embed/status` (`write_status` in routes.py). */
export interface IWorkerStatus {
  /** `starting` until the worker thread has set up MLX; `failed` if that failed. */
  state: 'starting' | 'ready' | 'failed' | 'closed';
  /** A forward pass (or a model load) is running right now. */
  busy?: boolean;
  default_model: string;
  queue_depth: number;
  queue_size: number;
  requests: number;
  requests_failed: number;
  tokens: number;
  batches: number;
  version?: string;
  /** Set once the worker has started (with `device`, `blas` and `mlx_version`). */
  loaded_models?: string[];
  device?: string;
  mlx_version?: string;
  blas?: { name: string; fast: boolean; path: string | null; detail: string };
  /** Why the worker failed to start (`state` is `failed`). */
  error?: string;
  /** `GET v1/models/{id}` of each loaded model (its metadata). */
  models?: IModelCard[];
  /** The persistent vector cache: hits are texts answered without running the model. */
  cache?: { enabled: boolean; hits: number; misses: number };
}

/** A model's metadata, as `GET v1/models/{id}` gives it. */
export interface IModelCard {
  id: string;
  dimensions: number;
  max_input_tokens: number;
  pooling: string;
  prompts: Record<string, string>;
  default_prompt_name: string | null;
  quantization: { bits: number; group_size: number } | null;
  loaded: boolean;
}

/** The outcome of one status request. */
export type StatusResult =
  { kind: 'ok'; status: IWorkerStatus } | { kind: 'missing' } | { kind: 'error'; message: string };

/** Value of the item's `data-state` attribute. */
export type ItemState = 'ready' | 'idle' | 'busy' | 'missing' | 'error';

/** What the status-bar item shows for a result. */
export interface IStatusView {
  state: ItemState;
  label: string;
  title: string;
}

/** Ask the server for the worker's status (auth, XSRF and base URL from `settings`). */
export async function fetchStatus(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<StatusResult> {
  const url = URLExt.join(settings.baseUrl, 'mlx-embed', 'status');
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, {}, settings);
  } catch (error) {
    return { kind: 'error', message: `Cannot reach the Jupyter server (${String(error)})` };
  }
  if (response.status === 404) {
    return { kind: 'missing' };
  }
  if (!response.ok) {
    return { kind: 'error', message: `The status route answered ${response.status}` };
  }
  try {
    return { kind: 'ok', status: (await response.json()) as IWorkerStatus };
  } catch {
    return { kind: 'error', message: 'The status route did not answer JSON' };
  }
}

const PREFIX = 'Embeddings: ';
const CLICK_HINT = 'Click for the OpenAI-compatible endpoint.';

/** The label, tooltip and `data-state` for a status result. */
export function describe(result: StatusResult): IStatusView {
  if (result.kind === 'missing') {
    return {
      state: 'missing',
      label: `${PREFIX}extension missing`,
      title:
        'This Jupyter server does not run the jupyter_mlx_embed server extension ' +
        '(GET mlx-embed/status answered 404).\n' +
        'Check `jupyter server extension list`, then restart the server.'
    };
  }
  if (result.kind === 'error') {
    return { state: 'error', label: `${PREFIX}error`, title: result.message };
  }
  const s = result.status;
  if (s.state === 'failed' || s.state === 'closed') {
    const why = s.state === 'failed' ? `failed to start: ${s.error ?? 'unknown error'}` : 'stopped';
    return { state: 'error', label: `${PREFIX}error`, title: `The embedding worker ${why}.` };
  }
  const models = s.loaded_models ?? [];
  const model = models.length > 1 ? `${models[0]} +${models.length - 1}` : models[0];
  let state: ItemState;
  let label: string;
  if (s.queue_depth > 0 || s.busy) {
    state = 'busy';
    const pending = s.queue_depth > 0 ? ` (${count(s.queue_depth)} queued)` : '';
    label = `${model ? `${model} · ` : ''}busy${pending}`;
  } else if (model === undefined) {
    state = 'idle';
    label = 'not loaded yet';
  } else {
    state = 'ready';
    label = `${model} · ${count(s.requests)} req`;
  }
  return { state, label: PREFIX + label, title: details(s) };
}

/** The multi-line tooltip with everything the route reports. */
function details(s: IWorkerStatus): string {
  const models = s.loaded_models?.length ? s.loaded_models.join(', ') : 'none yet';
  const blas = s.blas ? `${s.blas.name} (${s.blas.fast ? 'fast' : 'slow reference BLAS'})` : 'not known yet';
  return [
    `Embedding worker: ${s.state}`,
    `Loaded models: ${models} (default: ${s.default_model})`,
    `Queue: ${count(s.queue_depth)} of ${count(s.queue_size)}${s.busy ? ' · computing' : ''}`,
    `Requests: ${count(s.requests)} served, ${count(s.requests_failed)} failed`,
    `Tokens: ${count(s.tokens)} in ${count(s.batches)} batches`,
    `Cache: ${cacheLine(s.cache)}`,
    ...(s.models ?? []).map(modelLine),
    `Device: ${s.device ?? 'not known yet'} · BLAS: ${blas}`,
    `jupyter-mlx-embed ${s.version ?? '?'} · MLX ${s.mlx_version ?? '?'}`,
    '',
    CLICK_HINT
  ].join('\n');
}

function modelLine(card: IModelCard): string {
  const parts = [
    `${card.dimensions} dims`,
    `max ${count(card.max_input_tokens)} tokens`,
    `${card.pooling} pooling`,
    card.quantization ? `${card.quantization.bits}-bit` : 'float'
  ];
  const prompts = Object.keys(card.prompts ?? {});
  if (prompts.length) {
    parts.push(`prompts: ${prompts.join(', ')}`);
  }
  return `${card.id}: ${parts.join(' · ')}`;
}

function cacheLine(cache: IWorkerStatus['cache']): string {
  if (!cache?.enabled) {
    return 'off';
  }
  const looked = cache.hits + cache.misses;
  const rate = looked ? ` (${Math.round((100 * cache.hits) / looked)}% hit rate)` : '';
  return `${count(cache.hits)} hits, ${count(cache.misses)} misses${rate}`;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

/** Milliseconds between status requests (backing off to a minute while they fail). */
const INTERVAL = 3000;
const MAX_INTERVAL = 60000;

/**
 * The status-bar item: polls the status route (standing by while the page is hidden) and
 * shows the worker's state. Its node has the class `jme-status-item` and, once the first
 * answer is in, a `data-state` attribute (see {@link ItemState}).
 */
export class StatusItem extends Widget {
  constructor(options: StatusItem.IOptions) {
    super();
    this._onClick = options.onClick;
    this.addClass('jme-status-item');
    this.addClass('jp-StatusBar-GroupItem');
    this.addClass('jp-mod-highlighted');
    this.node.tabIndex = 0;
    this.node.setAttribute('role', 'button');
    const dot = document.createElement('span');
    dot.className = 'jme-status-dot';
    this._label.className = 'jp-StatusBar-TextItem jme-status-label';
    this._label.textContent = `${PREFIX}…`;
    this.node.append(dot, this._label);
    this.node.title = 'Waiting for the embedding worker status…';

    const settings = options.serverSettings ?? ServerConnection.makeSettings();
    this._poll = new Poll({
      name: 'jupyter-mlx-embed:status',
      frequency: { interval: INTERVAL, backoff: true, max: MAX_INTERVAL },
      standby: 'when-hidden',
      factory: async () => {
        const result = await fetchStatus(settings);
        this._render(result);
        if (result.kind !== 'ok') {
          throw new Error(result.kind); // a rejected tick makes the poll back off
        }
      }
    });
  }

  /** The last status the server sent, if any. */
  get status(): IWorkerStatus | null {
    return this._status;
  }

  /** Ask for the status now instead of at the next tick. */
  refresh(): Promise<void> {
    return this._poll.refresh();
  }

  dispose(): void {
    if (!this.isDisposed) {
      this._poll.dispose();
      super.dispose();
    }
  }

  handleEvent(event: Event): void {
    if (event instanceof KeyboardEvent && event.key !== 'Enter' && event.key !== ' ') {
      return;
    }
    event.preventDefault();
    this._onClick();
  }

  protected onAfterAttach(): void {
    this.node.addEventListener('click', this);
    this.node.addEventListener('keydown', this);
  }

  protected onBeforeDetach(): void {
    this.node.removeEventListener('click', this);
    this.node.removeEventListener('keydown', this);
  }

  private _render(result: StatusResult): void {
    this._status = result.kind === 'ok' ? result.status : null;
    const view = describe(result);
    this.node.dataset.state = view.state;
    this.node.title = view.title;
    this.node.setAttribute('aria-label', `${view.label}. ${CLICK_HINT}`);
    this._label.textContent = view.label;
  }

  private readonly _label = document.createElement('span');
  private readonly _onClick: () => void;
  private readonly _poll: Poll;
  private _status: IWorkerStatus | null = null;
}

export namespace StatusItem {
  export interface IOptions {
    /** Called when the item is clicked or activated with the keyboard. */
    onClick: () => void;
    /** Server connection settings; defaults to this page's. */
    serverSettings?: ServerConnection.ISettings;
  }
}
