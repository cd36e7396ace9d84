/** JupyterLab plugin of jupyter-mlx-embed (placeholder until the status bar item lands). */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-mlx-embed:plugin',
  description: 'Embedding worker status and endpoint information.',
  autoStart: true,
  activate: (_app: JupyterFrontEnd) => {
    console.debug('jupyter-mlx-embed activated');
  }
};

export default plugin;
