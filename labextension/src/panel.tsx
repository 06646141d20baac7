import { VDomRenderer } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { gpuIcon } from './icon';
import { GpuStatusModel } from './model';
import { GpuStatusView } from './view';

/** The id of the sidebar panel (and of its layout restorer entry). */
export const PANEL_ID = 'lightning-magic-gpu-panel';

/**
 * The sidebar panel: renders its model, and tells the model when it is visible, so that the
 * model's poll runs only while someone can see the readings.
 */
export class GpuStatusPanel extends VDomRenderer<GpuStatusModel> {
  constructor(model: GpuStatusModel) {
    super(model);
    this.id = PANEL_ID;
    this.addClass('lmagic-Panel');
    this.title.icon = gpuIcon;
    this.title.caption = 'GPU Status';
  }

  protected render(): React.ReactElement {
    const model = this.model;
    return (
      <GpuStatusView
        state={model.state}
        series={key => model.series(key)}
        interval={model.pollInterval}
        historyMs={model.historyMs}
      />
    );
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model?.setVisible(this, true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model?.setVisible(this, false);
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this.model?.setVisible(this, this.isVisible);
  }

  protected onBeforeDetach(msg: Message): void {
    this.model?.setVisible(this, false);
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.model?.setVisible(this, false);
    super.dispose();
  }
}
