// jsdom lacks a few browser classes that Lumino and JupyterLab touch when they load.
if (typeof globalThis.DragEvent === 'undefined') {
  class DragEvent extends MouseEvent {
    readonly dataTransfer: DataTransfer | null = null;
  }
  (globalThis as any).DragEvent = DragEvent;
}

if (typeof window.matchMedia !== 'function') {
  window.matchMedia = (query: string): MediaQueryList =>
    ({
      matches: false,
      media: query,
      onchange: null,
      addListener: () => undefined,
      removeListener: () => undefined,
      addEventListener: () => undefined,
      removeEventListener: () => undefined,
      dispatchEvent: () => false
    }) as MediaQueryList;
}

if (typeof globalThis.requestIdleCallback !== 'function') {
  (globalThis as any).requestIdleCallback = (callback: () => void) =>
    setTimeout(callback, 0);
}
