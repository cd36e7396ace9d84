/**
 * JupyterLab plugins of jupyter-mlx-embed: a status-bar item for the server's embedding worker
 * and a command that shows the OpenAI-compatible endpoint; and the explorer's static map
 * when a saved notebook's widget is gone (snapshot.ts).
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IStatusBar } from '@jupyterlab/statusbar';

import { showEndpointDialog } from './endpoint';
import { snapshotPlugin } from './snapshot';
import { StatusItem } from './status';

/** Command ids. */
export namespace CommandIDs {
  export const showEndpoint = 'jupyter-mlx-embed:show-endpoint';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-mlx-embed:plugin',
  description: 'Embedding worker status and endpoint information.',
  autoStart: true,
  optional: [ICommandPalette, IStatusBar],
  activate: (app: JupyterFrontEnd, palette: ICommandPalette | null, statusBar: IStatusBar | null) => {
    let item: StatusItem | null = null;

    app.commands.addCommand(CommandIDs.showEndpoint, {
      label: 'Embeddings: Show OpenAI Endpoint',
      caption: 'Show the OpenAI-compatible embeddings endpoint of this Jupyter server',
      execute: () => showEndpointDialog(item?.status?.default_model)
    });
    palette?.addItem({ command: CommandIDs.showEndpoint, category: 'Embeddings' });

    if (statusBar) {
      item = new StatusItem({
        onClick: () => void app.commands.execute(CommandIDs.showEndpoint),
        serverSettings: app.serviceManager.serverSettings
      });
      statusBar.registerStatusItem('jupyter-mlx-embed:status', {
        item,
        align: 'left',
        rank: 100
      });
    }
  }
};

export default [plugin, snapshotPlugin];
