"""CPU per signed-in read of one gateway process, in process: steadier than requests/s on a shared machine.

Starts Postgres, Redis and S3 (shared/localstack.py), makes a user with a job and a live sign-in
session, and serves `GET /v1/jobs/{id}` and `GET /v1/me` through the gateway as production runs it
(`create_app()` behind uvicorn's config wrappers, `BoundedHttpToolsProtocol` parsing the bytes, uvloop)
but over in-memory transports: the bytes a client would send go to `data_received`, the answer is
what the protocol writes. `CONNECTIONS` such connections send requests back to back; the time is the
process's CPU time (every thread: the event loop and the database thread pool) over a block of
requests, divided by the requests: the minimum of `--blocks` blocks, in microseconds per request.
The database's own CPU (another process) is not in it. With `PROMETHEUS_MULTIPROC_DIR` set, as it
is under `studio gateway --workers N`; `--single` is one process instead (no multiprocess metrics).
Both log as every gateway process does (the JSON log with uvicorn's access log; before 4d41a8f the
worker processes of `--workers N` configured no logging, and this bench left it out there).

    python bench/gateway_cpu.py [--requests 2000] [--blocks 7] [--profile job]

`--profile NAME` also prints cProfile's top functions (by own time) for one more block of that read.

`--socket` measures `studio gateway --workers N` itself instead (real sockets, so the kernel's share
of writing an answer counts): `hey -n REQUESTS -c 32` per block, and the CPU time (user + system,
/proc) of the gateway's processes over the block, divided by the requests; "machine" is the busy
time of all cores over the block (the load tool and Postgres included; others' work too). With
`--baseline REF`, a gateway of that commit (a temporary git worktree) runs beside it and the blocks
alternate between the two, so both see the same machine:

    python bench/gateway_cpu.py --socket --workers 2 --baseline a9cd9d3 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.localstack import LocalStack, free_port_block  # noqa: E402

CONNECTIONS = 8


class MemoryTransport(asyncio.Transport):
    """What uvicorn's protocol needs of a socket transport; `written` wakes the client when the
    answer's last byte (by Content-Length) has been written."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = bytearray()
        self.done = asyncio.Event()
        self.closed = False
        self.writes = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = bytes(self.buffer[:head_end]).lower()
            length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            if len(self.buffer) >= head_end + 4 + length:
                self.done.set()

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def seed() -> tuple[str, uuid.UUID]:
    """A user with a finished job and a live refresh-token family; (access token, job id)."""
    from shared.db import session_scope
    from shared.models import Job, JobStatus, RefreshToken, User
    from shared.security import create_access_token, hash_password, new_opaque_token

    user_id, job_id, family = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with session_scope() as s:
        user = User(id=user_id, email=f"cpu-{user_id}@example.com", password_hash=hash_password("x" * 12))
        s.add(user)
        s.flush()
        s.add(
            RefreshToken(
                user_id=user_id,
                family_id=family,
                token_hash=new_opaque_token()[1],
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )
        )
        s.add(
            Job(
                id=job_id,
                user_id=user_id,
                kind="photo_check",
                status=JobStatus.succeeded,
                progress=1.0,
                stage="done",
                result={"photos": [str(uuid.uuid4())]},
                started_at=datetime.now(UTC),
                finished_at=datetime.now(UTC),
            )
        )
        password_hash = user.password_hash
    return create_access_token(user_id, password_hash, family)[0], job_id


async def serve(app: Any, requests: list[bytes]) -> tuple[float, float, int]:
    """Send `requests` over CONNECTIONS in-memory connections; (CPU s, wall s, transport writes)."""
    import uvicorn
    from uvicorn.server import ServerState

    from services.gateway.http_protocol import BoundedHttpToolsProtocol

    config = uvicorn.Config(app, proxy_headers=True, log_config=None, http=BoundedHttpToolsProtocol)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    queue = list(requests)
    writes = 0

    async def connection() -> None:
        nonlocal writes
        protocol = BoundedHttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop)
        transport = MemoryTransport()
        protocol.connection_made(transport)
        while queue:
            raw = queue.pop()
            transport.buffer.clear()
            transport.done.clear()
            protocol.data_received(raw)
            await transport.done.wait()
            assert transport.buffer.startswith(b"HTTP/1.1 200"), bytes(transport.buffer[:300])
        writes += transport.writes
        protocol.connection_lost(None)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return time.process_time() - cpu, time.perf_counter() - wall, writes


def request(path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: hey/0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nAccept-Encoding: gzip\r\n\r\n"
    ).encode()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (/proc/PID/stat, clock ticks)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat: user, nice, system, irq,
    softirq, steal): the gateway, the load tool, the databases and the kernel's network work."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def socket_blocks(args: argparse.Namespace, root: Path, stack: LocalStack) -> None:
    """Alternate blocks of `hey -n` between the gateways (this checkout, and the baseline's)."""
    import subprocess

    import httpx

    from bench.gateway_load import baseline_checkout, gateway_pids, sign_in, start_gateway, stop

    env = {**os.environ, **stack.env(), "VAR_DIR": str(root / "var"), "HEALTH_PORT": "0"}
    env.pop("LOG_JSON", None)
    variants = {"new": REPO}
    if args.baseline:
        variants = {"baseline": baseline_checkout(args.baseline, root), **variants}
    subprocess.run(
        [sys.executable, "-m", "shared.cli", "migrate"], env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    gateways = {}
    try:
        for name, code in variants.items():
            gateways[name] = start_gateway(code, env, args.workers, root, name)
        urls = {}
        for name, (_proc, url) in gateways.items():
            with httpx.Client(base_url=url, timeout=30) as api:
                token, job_id = sign_in(api)
                paths = {"job": f"/v1/jobs/{job_id}", "me": "/v1/me"}
                for path in paths.values():
                    for _ in range(50):
                        assert api.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
            urls[name] = (token, {k: url + p for k, p in paths.items()})
        for what in args.only.split(","):
            per: dict[str, list[float]] = {name: [] for name in gateways}
            rates: dict[str, list[float]] = {name: [] for name in gateways}
            machine: dict[str, list[float]] = {name: [] for name in gateways}
            for _ in range(args.blocks):
                for name, (proc, _url) in gateways.items():
                    token, targets = urls[name]
                    pids = gateway_pids(proc.pid)
                    before, busy = cpu_seconds(pids), machine_busy_seconds()
                    out = subprocess.run(
                        ["hey", "-n", str(args.requests), "-c", "32", "-H", f"Authorization: Bearer {token}",
                         targets[what]],
                        capture_output=True, text=True, check=True,
                    ).stdout  # fmt: skip
                    cpu, busy = cpu_seconds(pids) - before, machine_busy_seconds() - busy
                    ok = int(out.split("[200]")[1].split()[0]) if "[200]" in out else 0
                    assert ok == args.requests // 32 * 32 and "Error distribution" not in out, out[-800:]
                    per[name].append(cpu * 1e6 / ok)
                    machine[name].append(busy * 1e6 / ok)
                    rates[name].append(float(out.split("Requests/sec:")[1].split()[0]))
            for name in gateways:
                cpus = per[name]
                blocks = " ".join(f"{c:.0f}" for c in cpus)
                print(
                    f"{what:<4} {name:<9} CPU us/request min {min(cpus):.0f}"
                    f" median {sorted(cpus)[len(cpus) // 2]:.0f} (blocks: {blocks});"
                    f" machine (all processes) min {min(machine[name]):.0f};"
                    f" req/s max {max(rates[name]):.0f}",
                    flush=True,
                )
    finally:
        for proc, _url in gateways.values():
            stop(proc)
        if args.baseline:
            remove = ["git", "worktree", "remove", "--force", str(root / "baseline")]
            subprocess.run(remove, cwd=REPO, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per block")
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--only", default="job,me")
    parser.add_argument("--profile", metavar="NAME", help="cProfile one more block of this read (job or me)")
    parser.add_argument("--single", action="store_true", help="as `studio gateway` without --workers")
    parser.add_argument("--socket", action="store_true", help="measure `studio gateway` over sockets")
    parser.add_argument("--workers", type=int, default=2, help="with --socket: gateway processes")
    parser.add_argument("--baseline", metavar="GIT_REF", help="with --socket: also this commit, alternating")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="studio-cpu-"))
    root.chmod(0o755)
    stack = LocalStack(root, base_port=free_port_block(6)).start()
    try:
        if args.socket:
            socket_blocks(args, root, stack)
            return
        os.environ.update({**stack.env(), "VAR_DIR": str(root / "var"), "HEALTH_PORT": "0"})
        if not args.single:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(root / "metrics")
            (root / "metrics").mkdir()
        import uvloop

        from services.gateway.app import create_app
        from shared.logging_setup import configure_logging
        from shared.migrations import upgrade_head

        upgrade_head()
        configure_logging("gateway")  # every gateway process, uvicorn's workers too (log_config)
        token, job_id = seed()
        paths = {"job": f"/v1/jobs/{job_id}", "me": "/v1/me"}
        app = create_app()
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        runner.run(serve(app, [request(paths["job"], token)] * 200))  # warm: imports, pool, caches
        for name in args.only.split(","):
            raw = request(paths[name], token)
            cpus, walls = [], []
            for _ in range(args.blocks):
                cpu, wall, writes = runner.run(serve(app, [raw] * args.requests))
                cpus.append(cpu * 1e6 / args.requests)
                walls.append(wall * 1e6 / args.requests)
            blocks = " ".join(f"{c:.0f}" for c in cpus)
            print(
                f"{name:<4} CPU us/request min {min(cpus):.0f} median {sorted(cpus)[len(cpus) // 2]:.0f}"
                f" (blocks: {blocks}); wall us/request min {min(walls):.0f};"
                f" writes/request {writes / args.requests:.2f}"
            )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            runner.run(serve(app, [request(paths[args.profile], token)] * args.requests))
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        runner.close()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
