/**
 * The "show endpoint" dialog: this server's OpenAI-compatible base URL and a client snippet.
 *
 * The server's token is never read or shown: snippets take it from the environment, so that
 * nothing copied from here can leak it into a saved notebook.
 */
import { Clipboard, Dialog } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { Widget } from '@lumino/widgets';

/** The model a snippet names when the worker has not reported its default yet. */
const FALLBACK_MODEL = 'all-MiniLM-L6-v2';

/** Absolute `/v1` base URL of this Jupyter server, e.g. `http://localhost:8888/v1`. */
export function endpointUrl(): string {
  return URLExt.join(PageConfig.getBaseUrl(), 'v1');
}

/** Python code that embeds two strings with the official `openai` client. */
export function clientSnippet(baseUrl: string, model: string): string {
  return [
    'import os',
    'from openai import OpenAI',
    '',
    'client = OpenAI(',
    `    base_url="${baseUrl}",`,
    '    api_key=os.environ["JUPYTER_TOKEN"],  # never paste the token into a notebook',
    ')',
    `response = client.embeddings.create(model="${model}", input=["hello", "world"])`
  ].join('\n');
}

/** Show the endpoint dialog; `model` (the worker's default) goes into the snippet. */
export async function showEndpointDialog(model: string = FALLBACK_MODEL): Promise<void> {
  const dialog = new Dialog({
    title: 'OpenAI-compatible embeddings endpoint',
    body: new EndpointBody(endpointUrl(), model),
    buttons: [Dialog.okButton({ label: 'Close' })],
    hasClose: true
  });
  dialog.addClass('jme-endpoint-dialog');
  await dialog.launch();
}

/** The dialog's body: base URL, snippet and how to get the token. */
class EndpointBody extends Widget {
  constructor(url: string, model: string) {
    super();
    this.addClass('jme-endpoint-body');
    this.node.append(
      section('Base URL', url, 'jme-endpoint-url', 'Copy URL'),
      section('Python (openai)', clientSnippet(url, model), 'jme-endpoint-snippet', 'Copy code'),
      paragraph(
        'The API key is this server’s token (the endpoint uses the server’s own ' +
          'authentication); it is not shown here. Run ',
        code('jupyter server list'),
        ' in a terminal (the ',
        code('token=…'),
        ' part of the URL) and put it in ',
        code('JUPYTER_TOKEN'),
        ' for the program that calls the endpoint.'
      ),
      paragraph(
        'Notebooks on this server need no token: ',
        code('jupyter_mlx_embed.embed()'),
        ' and ',
        code('%embed'),
        ' already use this server’s worker, and ',
        code('jupyter_mlx_embed.openai_client()'),
        ' returns an OpenAI client for this endpoint, token included.'
      )
    );
  }
}

/** A labelled, copyable block of text. */
function section(title: string, text: string, className: string, copyLabel: string): HTMLElement {
  const root = document.createElement('div');
  root.className = `jme-endpoint-section ${className}`;
  const header = document.createElement('div');
  header.className = 'jme-endpoint-header';
  const heading = document.createElement('span');
  heading.className = 'jme-endpoint-title';
  heading.textContent = title;
  const button = document.createElement('button');
  button.className = 'jp-mod-styled jme-copy-button';
  button.type = 'button';
  button.textContent = copyLabel;
  button.title = `${copyLabel} to the clipboard`;
  button.addEventListener('click', () => {
    Clipboard.copyToSystem(text);
    button.textContent = 'Copied';
    window.setTimeout(() => (button.textContent = copyLabel), 1500);
  });
  header.append(heading, button);
  const pre = document.createElement('pre');
  pre.className = 'jme-endpoint-code';
  pre.textContent = text;
  root.append(header, pre);
  return root;
}

function paragraph(...parts: (string | Node)[]): HTMLElement {
  const p = document.createElement('p');
  p.append(...parts);
  return p;
}

function code(text: string): HTMLElement {
  const element = document.createElement('code');
  element.textContent = text;
  return element;
}
