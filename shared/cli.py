"""`studio`: one command line for every process of Portrait Studio (see ARCHITECTURE.md)."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from shared.config import Settings, get_settings

app = typer.Typer(help="Portrait Studio: run the services, train and generate.", no_args_is_help=True)

try:  # the model registry commands (`studio models pull|list`)
    from shared.ml.cli import models_app

    app.add_typer(models_app, name="models")
except ImportError:  # a slim image without the ML extras
    pass


def _setup(service: str) -> None:
    from shared.logging_setup import configure_logging

    configure_logging(service)


@app.command()
def gateway(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """The HTTP API and the web page. Kubernetes runs one process per pod (1 CPU); `--workers N` runs N
    processes on one host. `/metrics` (with `/healthz`, `/readyz`) is served on HEALTH_PORT only, never
    on the public port; with N processes it sums theirs (prometheus_client's multiprocess mode)."""
    import uvicorn

    from shared.health import serve_health
    from shared.logging_setup import logging_config

    if workers > 1:  # the worker processes write their metrics to files this process reads
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="metrics-gateway-"))
    _setup("gateway")
    serve_health(get_settings().health_port, "gateway")
    uvicorn.run(
        "services.gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # applied again in each worker process (spawned: it has none of this process's handlers)
        log_config=logging_config("gateway"),
        # X-Forwarded-For only where a proxy in front is named (FORWARDED_ALLOW_IPS, uvicorn's own
        # setting: the ingress pods in deploy/k8s). uvicorn would otherwise trust it from 127.0.0.1,
        # and on one host every local client could pick its address and dodge the rate limits.
        proxy_headers=bool(os.environ.get("FORWARDED_ALLOW_IPS")),
        timeout_graceful_shutdown=10,
        # httptools with bounds on the request head (431 / 408): uvicorn has none for it
        http="services.gateway.http_protocol:BoundedHttpToolsProtocol",
    )


@app.command()
def worker(
    queue: Annotated[str, typer.Argument(help="photos | train | generate | notify")],
    concurrency: int = 1,
) -> None:
    """A Celery worker for one queue. GPU queues use one process per GPU (concurrency 1)."""
    from shared.jobs.celery_app import QUEUE_MODULES, preload

    if queue not in QUEUE_MODULES:
        raise typer.BadParameter(f"unknown queue {queue!r}; choose from {', '.join(QUEUE_MODULES)}")
    # Pool processes write metrics to files the health server aggregates.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix=f"metrics-{queue}-"))
    _setup(f"worker-{queue}")
    import importlib

    from shared.health import serve_health
    from shared.jobs.celery_app import celery_app

    if queue in ("generate", "train"):  # /readyz: 503 until the pool process has its models warm
        from shared.warm import require_warm_up

        require_warm_up(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    preload(queue)  # whole before the fork, without poisoning it for CUDA (see shared/jobs/celery_app.py)
    for module in QUEUE_MODULES[queue]:
        importlib.import_module(module)  # registers the tasks; models load lazily in the pool
    serve_health(get_settings().health_port, f"worker-{queue}")
    celery_app.worker_main(
        [
            "worker",
            "-Q",
            queue,
            "-c",
            str(concurrency),
            "-n",
            f"{queue}-{os.getpid()}@%h",
            "--loglevel",
            "INFO",
            "-P",
            "prefork",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def _loop_until_signal(run) -> None:  # type: ignore[no-untyped-def]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run(stop=lambda: stopping)


@app.command()
def relay() -> None:
    """Publish committed outbox rows to Celery."""
    from shared.health import serve_health
    from shared.jobs.outbox import run_relay

    _setup("relay")
    serve_health(get_settings().health_port, "relay")
    _loop_until_signal(run_relay)


@app.command()
def scheduler() -> None:
    """Reap stale jobs, schedule the retention sweep, sample queue depths."""
    from shared.health import serve_health
    from shared.scheduler import run_scheduler

    _setup("scheduler")
    serve_health(get_settings().health_port, "scheduler")
    _loop_until_signal(run_scheduler)


@app.command()
def sweep(
    grace_seconds: Annotated[
        int | None, typer.Option(help="orphans older than this (default: PENDING_OBJECT_GRACE_SECONDS)")
    ] = None,
) -> None:
    """Delete now the objects whose writer died before its row committed, and queue a retention
    sweep (expired photos) for the `photos` worker; the scheduler does both every hour."""
    from datetime import UTC, datetime

    from shared import pending_objects
    from shared.contracts import SweepRetention
    from shared.db import session_scope
    from shared.jobs import enqueue

    _setup("sweep")
    grace = get_settings().pending_object_grace_seconds if grace_seconds is None else grace_seconds
    typer.echo(f"orphaned objects deleted: {pending_objects.sweep(grace)}")
    with session_scope() as session:
        key = f"retention:manual:{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%f}"
        job = enqueue(session, SweepRetention(), user_id=None, idempotency_key=key)
        typer.echo(f"retention sweep queued: job {job.id}")


@app.command()
def migrate() -> None:
    """Bring the database to the latest schema and make sure the bucket exists."""
    from shared import storage
    from shared.migrations import upgrade_head

    _setup("migrate")
    upgrade_head()
    storage.ensure_bucket()
    typer.echo("database and bucket are ready")


def _forward(command_path: str, module: str, attr: str, args: list[str]) -> None:
    """Run a typer command that lives in a service, importing its heavy modules only now."""
    import importlib

    command = getattr(importlib.import_module(module), attr)
    sub = typer.Typer(add_completion=False)
    sub.command()(command)
    typer.main.get_command(sub).main(args=args, prog_name=command_path)


FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


@app.command(context_settings=FORWARD)
def train(ctx: typer.Context) -> None:
    """Train a likeness LoRA from a folder of photos, without services (`studio train --help`)."""
    _forward("studio train", "services.trainer.train", "train_cmd", ctx.args)


@app.command(context_settings=FORWARD)
def generate(ctx: typer.Context) -> None:
    """Render portraits with a likeness and a style, without services (`studio generate --help`)."""
    _forward("studio generate", "services.generator.cli", "generate_cmd", ctx.args)


@app.command(context_settings=FORWARD)
def warmup(ctx: typer.Context) -> None:
    """Compile the generator's networks for every style's shapes into the compile cache under
    MODEL_DIR (or check that they load from it) (`studio warmup --help`)."""
    _forward("studio warmup", "services.generator.cli", "warmup_cmd", ctx.args)


OTHER_PORTS = (
    "To run beside it, choose other ports: `studio run --port 8001 --base-port 18330` (the gateway's port, "
    "and the first of 27 for the servers and health checks), with its own data: VAR_DIR=var2."
)


@app.command()
def run(
    port: int = 8000,
    base_port: Annotated[int, typer.Option(help="first of the local servers' ports")] = 8330,
) -> None:
    """The whole product on this machine: real servers as children, data under var/.

    A crashed service (gateway, worker, relay, scheduler) restarts with backoff while the rest keeps
    serving; everything stops on Ctrl-C (or SIGTERM) or when a server (Postgres, Redis, S3, SMTP) dies.
    """
    from shared.contracts import QUEUES
    from shared.guardian import Guardian
    from shared.localstack import LocalStack, ports_in_use
    from shared.supervisor import Service, Supervisor

    # Plain text unless asked otherwise, for this process (the local servers' lines) as for its
    # children: one terminal, one format.
    os.environ.setdefault("LOG_JSON", "false")
    get_settings.cache_clear()
    _setup("run")
    settings = get_settings()
    # The services' own ports: the gateway's, and each service's health port (HEALTH_PORT). A taken
    # one would make that service crash and restart forever: refuse at once, in words.
    health = {f"worker-{queue}": base_port + 20 + offset for offset, queue in enumerate(QUEUES)}
    health |= {"relay": base_port + 24, "scheduler": base_port + 25, "gateway": base_port + 26}
    busy = ports_in_use({"gateway": port} | {f"{name} health": p for name, p in health.items()})
    if busy:
        typer.echo(f"cannot start: {'; '.join(busy)}. {OTHER_PORTS}", err=True)
        raise typer.Exit(1)
    guardian = Guardian()  # stops everything below if this process is killed (SIGKILL, OOM)
    stack = LocalStack(settings.var_dir, base_port=base_port, guardian=guardian)
    typer.echo("starting Postgres, Redis, S3 (SeaweedFS) and the SMTP catcher ...")
    try:
        stack.start()
    except RuntimeError as e:  # ports still taken: said in words, not as a traceback
        typer.echo(f"{e} {OTHER_PORTS}", err=True)
        guardian.close()
        raise typer.Exit(1) from None
    env = {
        **os.environ,
        **stack.env(),
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
    }

    def service(name: str, *args: str, health_port: int = 0) -> Service:
        child_env = {**env, "HEALTH_PORT": str(health_port), "HEALTH_HOST": "127.0.0.1"}
        return Service(name, [sys.executable, "-m", "shared.cli", *args], child_env)

    services = [service("gateway", "gateway", "--port", str(port), health_port=health["gateway"])]
    services += [
        service(f"worker-{queue}", "worker", queue, health_port=health[f"worker-{queue}"]) for queue in QUEUES
    ]
    services += [
        service("relay", "relay", health_port=health["relay"]),
        service("scheduler", "scheduler", health_port=health["scheduler"]),
    ]
    supervisor = Supervisor(services, guardian=guardian)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops everything as Ctrl-C does
    # Ctrl-C even where SIGINT came in ignored: a non-interactive shell's `studio run &` starts it
    # so, and Python then installs no KeyboardInterrupt at all (it hung in the test suite's runs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    failed = False
    try:
        subprocess.run([sys.executable, "-m", "shared.cli", "migrate"], env=env, check=True)
        supervisor.start()
        announced = False
        while (dead := stack.dead_server()) is None:
            supervisor.poll()  # a crashed service restarts with backoff; the rest keeps serving
            if not announced and _ready(f"http://127.0.0.1:{port}/readyz"):
                typer.echo(_running_banner(port, stack.mail_dir, settings))
                announced = True
            time.sleep(0.5)
        typer.echo(f"the local {dead} server stopped; stopping everything", err=True)
        failed = True
    except KeyboardInterrupt:
        typer.echo("\nstopping ...")
    finally:
        supervisor.stop()
        stack.stop()
        guardian.close()
        typer.echo("stopped.")
    if failed:
        raise typer.Exit(1)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _ready(url: str) -> bool:
    """Whether `url` (the gateway's /readyz) answers 200: it serves and reaches its servers."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a local http URL)
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def _running_banner(port: int, mail_dir: Path, settings: Settings) -> str:
    return (
        f"\nPortrait Studio is running.\n"
        f"  web page : http://127.0.0.1:{port}/\n"
        f"  API docs : http://127.0.0.1:{port}/docs\n"
        f"  mail     : {mail_dir}/new/ (every email sent, one Maildir file each)\n"
        f"  data     : {settings.var_dir} (kept across restarts)\n"
        f"  models   : preset '{settings.model_preset}'"
        + (" (demo models: images are noise)" if settings.model_preset == "tiny" else "")
        + "\nPress Ctrl-C to stop everything.\n"
    )


if __name__ == "__main__":
    app()
