"""Multi-GPU PyTorch Lightning training from a notebook cell, and live GPU readings.

This module holds entry points only, so that ``%load_ext lightning_magic`` stays instant:
torch, lightning and pynvml are imported inside the functions that need them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lightning_magic")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"


def load_ipython_extension(ipython):
    """Register ``%%lightning_train`` and ``%gpu_status`` (``%load_ext lightning_magic``)."""
    from .magic import LightningMagics

    magics = LightningMagics(ipython)
    ipython.register_magics(magics)
    magics.install_hooks()


def attach(run_id: str):
    """Redraw a background run's live view in this cell from its journal and follow it; its
    handle (the start of an id is enough; ``%lightning_runs`` lists them)."""
    from .magic import attach_run

    return attach_run(run_id)


def unload_ipython_extension(ipython):
    from .magic import LightningMagics

    for magics in list(ipython.magics_manager.registry.values()):
        if isinstance(magics, LightningMagics):
            magics.remove_hooks()


def _jupyter_server_extension_points():
    return [{"module": "lightning_magic.server"}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "lightning-magic"}]
