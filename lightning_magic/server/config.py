"""Settings of the ``/gpu-status`` endpoint, read from Jupyter's configuration as
``c.GpuStatus.<name>`` (for example in ``jupyter_server_config.py``)."""

from __future__ import annotations

import math

from traitlets import Bool, Float, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..readings import DEFAULT_IDLE_TIMEOUT, DEFAULT_INTERVAL, MIN_INTERVAL


class GpuStatus(LoggingConfigurable):
    """Live GPU, CPU and memory readings served at ``{base_url}gpu-status``."""

    sample_interval = Float(
        DEFAULT_INTERVAL,
        help=f"""Seconds between two readings of the GPUs (NVML), CPU and memory, at least
        {MIN_INTERVAL}. One background sampler reads the machine and every request is answered
        from its latest reading, so this setting, not the number of open panels, sets how often
        NVML is called. Example: c.GpuStatus.sample_interval = 2.0""",
    ).tag(config=True)

    idle_timeout = Float(
        DEFAULT_IDLE_TIMEOUT,
        help="""Seconds without a request after which the sampler stops reading the machine;
        the next request starts it again. Example: c.GpuStatus.idle_timeout = 300""",
    ).tag(config=True)

    show_other_users_processes = Bool(
        True,
        help="""List the GPU processes of other users (their pid, user name and GPU memory,
        never their command line). Set to False on shared machines where each user should see
        only their own processes. Example: c.GpuStatus.show_other_users_processes = False""",
    ).tag(config=True)

    checkpoint_root = Unicode(
        "",
        help="""The directory whose disk usage is reported as `disk`: where training runs
        write their checkpoints. Empty means `lightning_runs/` in the server's root_dir, where
        %%lightning_train puts them by default. It need not exist yet.
        Example: c.GpuStatus.checkpoint_root = "/data/checkpoints\"""",
    ).tag(config=True)

    @validate("sample_interval")
    def _check_sample_interval(self, proposal):
        value = proposal["value"]
        if math.isnan(value) or value < MIN_INTERVAL:
            self.log.warning(
                "c.GpuStatus.sample_interval = %r is below the minimum of %s seconds; "
                "using %s. Set it to %s or more to silence this warning.",
                value, MIN_INTERVAL, MIN_INTERVAL, MIN_INTERVAL,
            )
            return MIN_INTERVAL
        return value

    @validate("idle_timeout")
    def _check_idle_timeout(self, proposal):
        value = proposal["value"]
        if math.isnan(value) or value <= 0:
            self.log.warning(
                "c.GpuStatus.idle_timeout = %r must be a positive number of seconds; using %s.",
                value, DEFAULT_IDLE_TIMEOUT,
            )
            return DEFAULT_IDLE_TIMEOUT
        return value
