import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { gpuIcon } from './icon';
import { GpuStatusModel } from './model';
import { GpuStatusPanel, PANEL_ID } from './panel';
import { requestGpuStatus } from './request';

const PLUGIN_ID = 'lightning-magic:plugin';

namespace CommandIDs {
  export const show = 'lightning-magic:show-gpu-status';
}

/**
 * The GPU status sidebar panel, in the right sidebar until the user moves it.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Live GPU, CPU and memory readings in a sidebar panel.',
  autoStart: true,
  optional: [ILayoutRestorer, ISettingRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const serverSettings = app.serviceManager.serverSettings;
    const model = new GpuStatusModel({
      fetch: () => requestGpuStatus(serverSettings)
    });
    const panel = new GpuStatusPanel(model);
    app.shell.add(panel, 'right', { rank: 900, type: 'GPU Status' });
    restorer?.add(panel, PANEL_ID);

    app.commands.addCommand(CommandIDs.show, {
      label: 'Show GPU Status',
      caption: 'Open the GPU status panel',
      icon: gpuIcon,
      execute: () => app.shell.activateById(PANEL_ID)
    });
    palette?.addItem({ command: CommandIDs.show, category: 'GPU' });

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = () => {
            const seconds = settings.get('refreshInterval').composite as number;
            model.interval = seconds * 1000;
          };
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.error(
            `lightning-magic: the panel's settings could not be loaded; it refreshes ` +
              `every ${model.interval / 1000} s.`,
            reason
          );
        });
    }
  }
};

export default plugin;
