"""The Jupyter server extension: ``GET {base_url}gpu-status`` (see ``handlers``) and
``GET {base_url}gpu-status/metrics`` for Prometheus (see ``metrics``), configured
through ``c.GpuStatus`` (see ``config``). Enabled by the JSON file pip installs into
``etc/jupyter/jupyter_server_config.d``; its entry point is ``lightning_magic``'s
``_jupyter_server_extension_points``.

The rule of this folder: it serves what ``readings`` sampled; it reads nothing itself on the
event loop and imports neither torch nor Lightning."""

from __future__ import annotations

from pathlib import Path


def _load_jupyter_server_extension(serverapp):
    from jupyter_server.utils import url_path_join

    from .. import readings
    from .config import GpuStatus
    from .handlers import SETTINGS_KEY, GpuStatusEndpoint, GpuStatusHandler
    from .metrics import METRICS_KEY, GpuMetricsHandler, MetricsCache

    config = GpuStatus(parent=serverapp)
    checkpoint_root = (
        Path(config.checkpoint_root).expanduser()
        if config.checkpoint_root
        else readings.checkpoint_root(serverapp.root_dir)
    )
    sampler = readings.get_sampler(
        config.sample_interval, idle_timeout=config.idle_timeout, disk_path=checkpoint_root
    )
    web_app = serverapp.web_app
    endpoint = GpuStatusEndpoint(config, sampler)
    web_app.settings[SETTINGS_KEY] = endpoint
    web_app.settings[METRICS_KEY] = MetricsCache(endpoint)
    route = url_path_join(web_app.settings["base_url"], "gpu-status")
    metrics_route = url_path_join(route, "metrics")
    web_app.add_handlers(".*$", [(route, GpuStatusHandler),
                                 (metrics_route, GpuMetricsHandler)])
    serverapp.log.info(
        "lightning_magic: GPU readings at %s (Prometheus: %s), sampled every %s s while "
        "requested", route, metrics_route, sampler.interval,
    )
