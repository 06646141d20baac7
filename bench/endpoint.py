"""What ``GET /gpu-status`` costs a busy Jupyter server, next to jupyter-resource-usage.

One real ``jupyter server`` on 127.0.0.1 (token auth, jupyter-resource-usage enabled as
installed), with a real kernel that forks 2 CPU training ranks (torch.distributed, gloo, DDP)
training for the whole measurement. Measured in the same run, against the same server:

  latency   p50/p99 of /gpu-status, /api/metrics/v1 (jupyter-resource-usage) and /api/status
            (a trivial handler: the floor) at 1, 10 and 50 concurrent keep-alive clients,
            in interleaved rounds so that every endpoint sees the same background load
  CPU       server-process CPU seconds per 1000 requests of each (the kernel and ranks are
            other processes and do not count), and the sampler's own background cost
  loop lag  latency of an /api/status probe every 50 ms while 4 clients poll an endpoint at
            1 Hz (a sidebar each), against the same probe with nobody polling

Targets: /gpu-status p50 within 1.5x of /api/status, faster than /api/metrics/v1, and at least
5x less server CPU per request than /api/metrics/v1. The Prometheus text (/gpu-status/metrics,
rendered once per reading from the same sampler) is reported as its cost per scrape against
the JSON endpoint's, in server CPU and p50 latency.

    python bench/endpoint.py [--requests 400] [--lag-seconds 15]

Not part of the test run: it prints a table, and the targets as PASS/MISS lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import psutil

ENDPOINTS = {"/api/status": "floor", "/gpu-status": "lightning_magic",
             "/gpu-status/metrics": "lightning_magic, Prometheus",
             "/api/metrics/v1": "jupyter-resource-usage"}
CONCURRENCY = (1, 10, 50)
RANKS_MAX_SECONDS = 480  # the ranks stop by themselves after this, whatever happens here

TRAINING = textwrap.dedent("""
    import os, time
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    def _rank(rank, world, port, stop_file, deadline):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.set_num_threads(1)
        torch.manual_seed(rank)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        steps = 0
        while time.time() < deadline and not os.path.exists(stop_file):
            x = torch.randn(64, 64)
            loss = (model(x) - x[:, :1]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        with open(f"{stop_file}-steps-{rank}", "w") as report:
            report.write(str(steps))
        dist.destroy_process_group()

    _deadline = time.time() + __MAX_SECONDS__
    _ranks = mp.start_processes(_rank, args=(2, __PORT__, __STOP_FILE__, _deadline),
                                nprocs=2, join=False, start_method="fork")
    print("ranks:", *_ranks.pids(), flush=True)
    while not _ranks.join():
        pass
""")


# -- a small keep-alive HTTP/1.1 client (the same for every endpoint) --------------------------


class Connection:
    def __init__(self, port: int, token: str):
        self.port, self.token = port, token
        self.reader = self.writer = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def get(self, path: str) -> float:
        """Seconds from sending the request to having the whole body; raises on non-200."""
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                   f"Authorization: token {self.token}\r\nConnection: keep-alive\r\n\r\n")
        start = time.perf_counter()
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = dict(
            line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elapsed = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
        return elapsed

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def burst(port: int, token: str, path: str, clients: int, requests: int) -> list[float]:
    """``requests`` GETs of ``path`` spread over ``clients`` concurrent connections."""
    connections = [await Connection(port, token).open() for _ in range(clients)]
    latencies: list[float] = []
    share = [requests // clients + (i < requests % clients) for i in range(clients)]

    async def client(connection: Connection, count: int):
        for _ in range(count):
            latencies.append(await connection.get(path))

    try:
        await asyncio.gather(*(client(c, n) for c, n in zip(connections, share, strict=True)))
    finally:
        for connection in connections:
            connection.close()
    return latencies


async def lag_probe(port: int, token: str, polled: str | None, seconds: float) -> list[float]:
    """/api/status latencies every 50 ms while 4 clients poll ``polled`` at 1 Hz."""
    probe = await Connection(port, token).open()
    pollers = [await Connection(port, token).open() for _ in range(4 if polled else 0)]
    deadline = time.perf_counter() + seconds
    samples: list[float] = []

    async def poll(connection: Connection, offset: float):
        await asyncio.sleep(offset)
        while time.perf_counter() < deadline:
            await connection.get(polled)
            await asyncio.sleep(1.0)

    async def probing():
        while time.perf_counter() < deadline:
            samples.append(await probe.get("/api/status"))
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(probing(), *(poll(c, i / 4) for i, c in enumerate(pollers)))
    finally:
        for connection in [probe, *pollers]:
            connection.close()
    return samples


# -- the server, the kernel, the ranks ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, token: str, path: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


def start_server(workdir: Path, port: int, token: str) -> subprocess.Popen:
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(workdir / "runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={workdir}", "--allow-root", "--log-level=WARN"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "wb"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"The server exited; see {workdir / 'server.log'}")
        try:
            api(port, token, "/api/status")
            return server
        except OSError:
            time.sleep(0.2)
    raise SystemExit("The server did not answer within 120 s.")


def start_training(workdir: Path, port: int, token: str):
    """A kernel of the server, training on 2 forked gloo ranks; returns (client, ranks)."""
    from jupyter_client import BlockingKernelClient

    kernel = api(port, token, "/api/kernels", "POST", {"name": "python3"})
    client = BlockingKernelClient(
        connection_file=str(workdir / "runtime" / f"kernel-{kernel['id']}.json"))
    client.load_connection_file()
    client.start_channels()
    client.wait_for_ready(timeout=120)
    code = (TRAINING.replace("__PORT__", str(free_port()))
            .replace("__STOP_FILE__", repr(str(workdir / "stop")))
            .replace("__MAX_SECONDS__", str(RANKS_MAX_SECONDS)))
    client.execute(code)
    while True:
        message = client.get_iopub_msg(timeout=180)
        content = message["content"]
        if message["msg_type"] == "stream" and content["text"].startswith("ranks:"):
            pids = [int(pid) for pid in content["text"].split()[1:]]
            return kernel, client, pids
        if message["msg_type"] == "error":
            raise SystemExit("Training failed to start:\n" + "\n".join(content["traceback"]))


def stop_training(workdir: Path, client) -> str:
    (workdir / "stop").touch()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            message = client.get_iopub_msg(timeout=5)
        except Exception:  # queue.Empty: keep waiting until the deadline
            continue
        content = message["content"]
        if message["msg_type"] == "status" and content["execution_state"] == "idle":
            break
    client.stop_channels()
    steps = [(workdir / f"stop-steps-{rank}").read_text()
             for rank in range(2) if (workdir / f"stop-steps-{rank}").exists()]
    return f"{' and '.join(steps)} training steps" if steps else "steps not reported"


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def end_ranks(pids: list[int]) -> None:
    """Ranks stop on the stop file; any still running after 30 s are killed."""
    ranks = []
    for pid in pids:
        try:
            ranks.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(ranks, timeout=30)
    for rank in alive:
        rank.kill()
    psutil.wait_procs(alive, timeout=30)


# -- measuring ---------------------------------------------------------------------------------


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure(port: int, token: str, server: psutil.Process, requests: int,
                  lag_seconds: float, rounds: int = 4) -> dict:
    latencies = {(p, c): [] for p in ENDPOINTS for c in CONCURRENCY}
    cpu = {p: [0.0, 0] for p in ENDPOINTS}
    for path in ENDPOINTS:  # warm up: connections, imports, the sampler's first reading
        await burst(port, token, path, 4, 40)
    for round_ in range(rounds):
        shift = round_ % len(ENDPOINTS)
        order = list(ENDPOINTS)[shift:] + list(ENDPOINTS)[:shift]
        for clients in CONCURRENCY:
            for path in order:
                count = max(clients, requests * (1 + CONCURRENCY.index(clients)) // rounds)
                before = cpu_seconds(server)
                latencies[(path, clients)] += await burst(port, token, path, clients, count)
                cpu[path][0] += cpu_seconds(server) - before
                cpu[path][1] += count
    # the sampler's background cost: the server idle while the sampler runs
    await burst(port, token, "/gpu-status", 1, 1)
    before, started = cpu_seconds(server), time.perf_counter()
    await asyncio.sleep(5.0)
    idle_rate = (cpu_seconds(server) - before) / (time.perf_counter() - started)
    lag = {}
    for polled in (None, "/gpu-status", "/api/metrics/v1"):
        lag[polled] = await lag_probe(port, token, polled, lag_seconds)
    return {"latencies": latencies, "cpu": cpu, "idle_rate": idle_rate, "lag": lag}


def report(results: dict, context: dict) -> str:
    ms = 1000.0
    lines = [
        f"GET /gpu-status under load: {context['date']}",
        f"machine: {context['machine']}",
        f"software: Python {platform.python_version()}, jupyter_server "
        f"{context['jupyter_server']}, jupyter-resource-usage {context['resource_usage']} "
        f"(default settings), torch {context['torch']}",
        f"load: 1 kernel of the server training on 2 forked gloo DDP ranks ({context['steps']})",
        "",
        "| endpoint | clients | p50 ms | p99 ms | requests |",
        "|---|---:|---:|---:|---:|",
    ]
    latencies = results["latencies"]
    for clients in CONCURRENCY:
        for path, owner in ENDPOINTS.items():
            values = latencies[(path, clients)]
            lines.append(f"| {path} ({owner}) | {clients} | {percentile(values, .5) * ms:.2f} | "
                         f"{percentile(values, .99) * ms:.2f} | {len(values)} |")
    lines += ["", "| endpoint | server CPU s / 1000 requests |", "|---|---:|"]
    per_1000 = {}
    for path, (seconds, count) in results["cpu"].items():
        per_1000[path] = 1000 * seconds / count
        lines.append(f"| {path} | {per_1000[path]:.3f} |")
    lines.append(f"\none reading of this machine (the sampler's work, measured in-process): "
                 f"{context['reading_ms']:.2f} ms CPU; the idle server with the sampler "
                 f"running uses {results['idle_rate'] * 1000:.1f} ms CPU per second in all")
    lines += ["", "| 4 clients polling at 1 Hz | probe /api/status p50 ms | p99 ms | max ms |",
              "|---|---:|---:|---:|"]
    for polled, values in results["lag"].items():
        lines.append(f"| {polled or 'nobody'} | {percentile(values, .5) * ms:.2f} | "
                     f"{percentile(values, .99) * ms:.2f} | {max(values) * ms:.2f} |")
    lines.append("")
    for clients in CONCURRENCY:
        ours = statistics.median(latencies[("/gpu-status", clients)])
        floor = statistics.median(latencies[("/api/status", clients)])
        theirs = statistics.median(latencies[("/api/metrics/v1", clients)])
        lines.append(f"{clients:>2} clients: /gpu-status p50 = {ours / floor:.2f}x /api/status "
                     f"[{'PASS' if ours <= 1.5 * floor else 'MISS'} <= 1.5x], "
                     f"{theirs / ours:.2f}x faster than /api/metrics/v1 "
                     f"[{'PASS' if ours < theirs else 'MISS'} > 1x]")
    ratio = per_1000["/api/metrics/v1"] / per_1000["/gpu-status"]
    lines.append(f"server CPU per request: /api/metrics/v1 / /gpu-status = {ratio:.1f}x "
                 f"[{'PASS' if ratio >= 5 else 'MISS'} >= 5x]")
    scrape = per_1000["/gpu-status/metrics"] / per_1000["/gpu-status"]
    scrape_p50 = statistics.median(latencies[("/gpu-status/metrics", 1)]) / statistics.median(
        latencies[("/gpu-status", 1)])
    lines.append(f"cost per Prometheus scrape: /gpu-status/metrics / /gpu-status = {scrape:.2f}x "
                 f"server CPU, {scrape_p50:.2f}x p50 latency at 1 client")
    return "\n".join(lines)


def reading_cost(count: int = 20) -> float:
    """CPU milliseconds of one reading (NVML as available here, psutil), as the sampler does."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lightning_magic import readings

    sampler = readings.Sampler(readings.MIN_INTERVAL, idle_timeout=3600)
    try:
        sampler.latest()
        before = time.thread_time()
        start = time.process_time()
        for _ in range(count):
            sampler.wait_next()
        used = time.process_time() - start - (time.thread_time() - before)
    finally:
        sampler.stop()
    return 1000 * used / count


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{model}, {psutil.cpu_count()} logical cores, {memory:.0f} GiB, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400,
                        help="requests per endpoint at 1 client (x2 at 10, x3 at 50)")
    parser.add_argument("--lag-seconds", type=float, default=15.0,
                        help="length of each event-loop probe phase")
    options = parser.parse_args()

    from importlib.metadata import version

    token = secrets.token_hex(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gpu-status-bench-") as tmp:
        workdir = Path(tmp)
        server = start_server(workdir, port, token)
        client, ranks, steps = None, [], ""
        try:
            kernel, client, ranks = start_training(workdir, port, token)
            print(f"server {server.pid}, kernel {kernel['id'][:8]}, ranks {ranks}; measuring...",
                  file=sys.stderr)
            results = asyncio.run(measure(port, token, psutil.Process(server.pid),
                                          options.requests, options.lag_seconds))
            if not all(psutil.pid_exists(pid) for pid in ranks):
                print("warning: a rank ended before the measurement did", file=sys.stderr)
            steps = stop_training(workdir, client)
            client = None
            api(port, token, f"/api/kernels/{kernel['id']}", "DELETE")
        finally:
            (workdir / "stop").touch()
            if client is not None:
                client.stop_channels()
            stop_server(server)
            end_ranks(ranks)
    context = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "jupyter_server": version("jupyter_server"),
        "resource_usage": version("jupyter-resource-usage"),
        "torch": version("torch"),
        "steps": steps,
        "reading_ms": reading_cost(),
    }
    print(report(results, context))


if __name__ == "__main__":
    main()
