import { LabIcon } from '@jupyterlab/ui-components';

/** A GPU board with a lightning bolt, drawn in the theme's icon colour. */
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 6h18a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H3V6zm2 2v7h15V8H5z"/>
    <path d="M1 5h2v15H1zM6 17h2v3H6zm4 0h2v3h-2zm4 0h2v3h-2z"/>
    <path d="M13.5 8.5 9.5 12.2h2.6l-1.4 2.8 4-3.7h-2.6z"/>
  </g>
</svg>`;

export const gpuIcon = new LabIcon({ name: 'lightning-magic:gpu', svgstr });
