"""Gateway load benchmark: signed-in reads and the event stream, on the real local stack.

Starts Postgres, Redis, S3 and SMTP (shared/localstack.py) and the gateway as it runs in production
(`studio gateway`, JSON logs; one process per pod and core in the Kubernetes manifest, `--workers N`
here to show the scaling per core), signs a user in, and measures with `hey` (apt-get install hey),
`hey -z DURATION -c CONNECTIONS` as in the issue:

- GET /v1/jobs/{id} (job status), GET /v1/me, GET /v1/photos (listing, presigned URLs);
- the event stream: SSE_CLIENTS clients open GET /v1/jobs/{id}/events at once; time to the first
  event, the gateway's memory (RSS) and Redis's connected clients before, while open and after,
  and the job-status rate while they stay open.

    python bench/gateway_load.py --label signed-in --workers 1,2 --baseline aac122f \
        --skip-sse --only job,me --profile

`--baseline REF` measures that commit first (a temporary git worktree, the same venv and servers), so
one run prints the baseline and the new numbers side by side; `--profile` records the gateway with
py-spy (`pip install py-spy`) during the job-status load and prints the top functions by self time.

Prints a table and writes bench/results/gateway_load_<label>.json. The load tool shares the
machine's cores with the gateway and the databases: numbers are for one machine, run back to back.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.localstack import LocalStack, free_port, free_port_block, wait_for_port  # noqa: E402

HEY_LATENCY = re.compile(r"(\d+)%% in ([\d.]+) secs".replace("%%", "%"))
HEY_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
HEY_STATUS = re.compile(r"\[(\d{3})\]\s+(\d+) responses")


def hey(url: str, token: str, duration: int, connections: int) -> dict:
    """Run hey against `url`; requests/s, latency percentiles (ms) and responses by status."""
    out = subprocess.run(
        ["hey", "-z", f"{duration}s", "-c", str(connections), "-H", f"Authorization: Bearer {token}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latencies = {f"p{p}": round(float(s) * 1000, 1) for p, s in HEY_LATENCY.findall(out)}
    statuses = {code: int(n) for code, n in HEY_STATUS.findall(out)}
    errors = sum(n for code, n in statuses.items() if code != "200") + out.count("Error distribution")
    return {"rps": float(HEY_RATE.search(out).group(1)), **latencies, "status": statuses, "errors": errors}


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(total / 1024, 1)


def gateway_pids(root: int) -> list[int]:
    """The gateway process and its children (uvicorn's worker processes)."""
    pids = [root]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    return pids


def jpeg(size: int = 256) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (180, 140, 120)).save(out, format="JPEG")
    return out.getvalue()


def sign_in(api: httpx.Client) -> tuple[str, str]:
    """A consented user with one uploaded photo; (access token, the photo check's job id)."""
    email, password = f"load-{time.time_ns()}@example.com", "correct horse battery"
    assert api.post("/v1/auth/signup", json={"email": email, "password": password}).status_code == 202
    token = api.post("/v1/auth/login", json={"email": email, "password": password}).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert api.post("/v1/me/consent", json={"accept": True}, headers=auth).status_code == 200
    r = api.post("/v1/photos", files=[("files", ("me.jpg", jpeg(), "image/jpeg"))], headers=auth)
    assert r.status_code == 201, r.text
    return token, r.json()["job"]["id"]


async def open_streams(url: str, token: str, job_id: str, clients: int, hold: float, sample) -> dict:  # type: ignore[no-untyped-def]
    """Open `clients` event streams at once, wait for each one's first event, hold them `hold` s."""
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=0)
    firsts: list[float] = []
    failures: list[str] = []
    opened = asyncio.Event()

    async def one(client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            params = {"access_token": token}
            async with client.stream("GET", f"/v1/jobs/{job_id}/events", params=params) as stream:
                if stream.status_code != 200:
                    failures.append(str(stream.status_code))
                    return
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        firsts.append(time.perf_counter() - started)
                        break
                await opened.wait()  # keep the stream open while the others connect and we sample
        except Exception as e:  # noqa: BLE001 - a failed stream is counted, not raised
            failures.append(type(e).__name__)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        tasks = [asyncio.create_task(one(client)) for _ in range(clients)]
        deadline = time.monotonic() + 120
        while len(firsts) + len(failures) < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        during = await asyncio.to_thread(sample, hold)
        opened.set()
        await asyncio.gather(*tasks)
    firsts.sort()

    def pick(q: float) -> float | None:
        return round(firsts[min(len(firsts) - 1, int(q * len(firsts)))] * 1000, 1) if firsts else None

    return {
        "clients": clients,
        "streams_ok": len(firsts),
        "failures": failures[:10],
        "n_failures": len(failures),
        "first_event_p50_ms": pick(0.5),
        "first_event_p99_ms": pick(0.99),
        **during,
    }


def profile_summary(raw: Path, top: int = 15) -> dict:
    """py-spy's collapsed stacks (`--format raw`) summed per function: each function's share of the
    samples with it on the stack (inclusive) and at the top of the stack (self), highest first."""
    total = 0
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            for f in stack.split(";")
        ]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [(name, round(100 * n / max(total, 1), 1)) for name, n in ranked]

    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}


def start_gateway(
    code: Path, env: dict, workers: int, root: Path, label: str
) -> tuple[subprocess.Popen, str]:
    """`studio gateway` of the checkout at `code` (this one, or a baseline's worktree) on a free port."""
    port = free_port()
    cmd = [sys.executable, "-m", "shared.cli", "gateway", "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    env = {**env, "PYTHONPATH": str(code)}
    log = open(root / f"gateway-{label}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_for_port(port, timeout=60, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def baseline_checkout(ref: str, root: Path) -> Path:
    """A detached worktree of `ref` (e.g. the commit before the speed work), run from the same venv."""
    path = root / "baseline"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), ref], cwd=REPO, check=True, capture_output=True
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label", default="run")
    parser.add_argument("--workers", default="1", help="gateway processes (uvicorn --workers), e.g. 1,2")
    parser.add_argument(
        "--baseline", metavar="GIT_REF", help="also measure this commit, first, in the same run"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the gateway during the job-status load"
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds per hey run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sse-clients", type=int, default=200)
    parser.add_argument("--skip-sse", action="store_true")
    parser.add_argument("--only", default="job,me,photos", help="comma-separated: job,me,photos,healthz")
    args = parser.parse_args()
    if not shutil.which("hey"):
        sys.exit("hey is not installed: apt-get install hey")
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if args.profile and not py_spy:
        sys.exit("py-spy is not installed: pip install py-spy")
    worker_counts = [int(w) for w in str(args.workers).split(",")]

    root = Path(tempfile.mkdtemp(prefix="studio-load-"))
    root.chmod(0o755)
    stack = LocalStack(root, base_port=free_port_block(6)).start()
    env = {**os.environ, **stack.env(), "VAR_DIR": str(root / "var"), "HEALTH_PORT": "0"}
    env.pop("LOG_JSON", None)  # production logs JSON (the default)
    variants = [("new", REPO)]
    results: dict = {
        "label": args.label,
        "connections": args.connections,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),  # fmt: skip
        "runs": {},
    }
    try:
        if args.baseline:
            variants.insert(0, ("baseline", baseline_checkout(args.baseline, root)))
            results["baseline"] = args.baseline
        subprocess.run(
            [sys.executable, "-m", "shared.cli", "migrate"], env={**env, "PYTHONPATH": str(REPO)},
            cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        for variant, code in variants:
            for workers in worker_counts:
                name = f"{variant}-{workers}p"
                gateway, url = start_gateway(code, env, workers, root, name)
                try:
                    results["runs"][name] = run_one(url, gateway, stack, args, py_spy, root / f"{name}.raw")
                finally:
                    stop(gateway)
        print_table(results)
        out = REPO / "bench" / "results" / f"gateway_load_{args.label}.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out.relative_to(REPO)}")
    finally:
        stack.stop()
        if args.baseline:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(root / "baseline")],
                cwd=REPO,
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


def run_one(
    url: str,
    gateway: subprocess.Popen,
    stack: LocalStack,
    args: argparse.Namespace,
    py_spy: str | None,
    raw: Path,
) -> dict:
    """One gateway under load: the hey runs, the optional profile and the event-stream run."""
    with httpx.Client(base_url=url, timeout=30) as api:
        token, job_id = sign_in(api)
        for path in ("/v1/me", f"/v1/jobs/{job_id}", "/v1/photos"):  # warm: imports, pools
            for _ in range(20):
                assert api.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    targets = {"job": f"/v1/jobs/{job_id}", "me": "/v1/me", "photos": "/v1/photos", "healthz": "/healthz"}
    result: dict = {"endpoints": {}}
    print(f"{url}: load starts", flush=True)
    for name in args.only.split(","):
        spy = None
        if args.profile and name == "job":
            pids = gateway_pids(gateway.pid)
            target = pids[-1]  # with --workers N, one of the worker processes
            record = [py_spy, "record", "-p", str(target), "-d", str(args.duration), "-r", "100"]
            record += [
                "-f",
                "raw",
                "-o",
                str(raw),
                "--nonblocking",
                "--gil",
            ]  # CPU (GIL-holding) samples only
            spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        result["endpoints"][name] = hey(url + targets[name], token, args.duration, args.connections)
        print(name, result["endpoints"][name], flush=True)
        if spy is not None:
            spy.wait(timeout=args.duration + 180)
            if raw.exists():
                result["profile_job_status"] = profile_summary(raw)

    if not args.skip_sse:
        rc = redis.Redis.from_url(stack.env()["REDIS_URL"])
        pids = gateway_pids(gateway.pid)
        before = {
            "rss_mb_before": rss_mb(pids),
            "redis_clients_before": rc.info("clients")["connected_clients"],
        }

        def during(hold: float) -> dict:
            load = hey(url + targets["job"], token, int(hold), args.connections)
            return {
                "rss_mb_open": rss_mb(pids),
                "redis_clients_open": rc.info("clients")["connected_clients"],
                "job_status_while_open": load,
            }

        sse = asyncio.run(open_streams(url, token, job_id, args.sse_clients, args.duration / 2, during))
        time.sleep(2)
        after = {"rss_mb_after": rss_mb(pids), "redis_clients_after": rc.info("clients")["connected_clients"]}
        result["events"] = {**sse, **before, **after}
        print("events", result["events"], flush=True)
    return result


def print_table(results: dict) -> None:
    """One line per run and endpoint: requests/s, p50/p99 ms, errors; then each profile's top functions."""
    print(f"{'run':<14} {'endpoint':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for run, r in results["runs"].items():
        for name, e in r["endpoints"].items():
            p50, p99 = e.get("p50", 0), e.get("p99", 0)
            print(f"{run:<14} {name:<8} {e['rps']:>8.0f} {p50:>8} {p99:>8} {e['errors']:>7}")
    for run, r in results["runs"].items():
        if "profile_job_status" in r:
            print(f"\n{run}: GET /v1/jobs/{{id}} profile, self % of samples")
            for fn, pct in r["profile_job_status"]["self_pct"][:12]:
                print(f"  {pct:5.1f}  {fn}")


if __name__ == "__main__":
    main()
