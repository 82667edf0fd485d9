"""Scale-out run: a pool of `generate` and `train` workers draining shared queues.

Everything is the real product: a local stack (Postgres, Redis, SeaweedFS, SMTP catcher), the
gateway, the outbox relay, Celery workers started with `studio worker`. Users sign up, upload
photos, train likenesses and ask for portraits through the public API; the jobs travel
gateway -> outbox -> relay -> Redis -> worker. For each pool size N the script starts N
`generate` and N `train` workers, submits one burst (a portrait job per trained user plus some
trainings by new users) and measures:

- portraits per minute and trainings per minute for the burst, and the ratio to N = 1;
- queue wait (job created -> claimed by a worker) and run time per job, with percentiles;
- which worker ran each job, and that every job ran exactly once (one attempt, one result:
  the expected Portrait rows, one ready likeness per training), none lost.

    python bench/scale_out.py                        # CPU, tiny preset, pools of 1 and 2
    python bench/scale_out.py --pools 1,2,4 --gpus 4 --preset sd15   # one worker per GPU

With --gpus G, worker i of each queue runs with CUDA_VISIBLE_DEVICES=i % G (one process per
GPU, the deployment's layout). The sd15 preset needs real weights (`studio models pull`);
the tiny preset runs anywhere, its images are noise and its seconds are CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.localstack import LocalStack, free_port, free_port_block, wait_for_port  # noqa: E402
from tests.pictures import astronaut_variants, jpeg  # noqa: E402  (photos made from skimage data)

PASSWORD = "correct horse battery"
ENDED = ("succeeded", "failed", "canceled")


@dataclass
class User:
    email: str
    auth: dict[str, str]
    likeness_id: str | None = None


class Cluster:
    """The local stack plus the product's processes, each in its own process group."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.env = env
        self.children: list[subprocess.Popen] = []
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=REPO, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.children.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            self.children.remove(proc)

    def stop_all(self) -> None:
        self.stop(list(self.children))


def signed_up_user(api: httpx.Client) -> User:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    assert api.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 202
    tokens = api.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    user = User(email, {"Authorization": f"Bearer {tokens['access_token']}"})
    api.post("/v1/me/consent", json={"accept": True}, headers=user.auth).raise_for_status()
    return user


def wait_jobs(api: httpx.Client, jobs: dict[str, User], timeout: float) -> dict[str, dict]:
    """Poll until every job ended; returns the final job documents by id."""
    done: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(jobs):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(jobs) - len(done)} of {len(jobs)} jobs did not end in {timeout:.0f}s")
        for job_id, user in jobs.items():
            if job_id not in done:
                job = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
                if job["status"] in ENDED:
                    done[job_id] = job
        time.sleep(0.5)
    return done


def upload_photos(api: httpx.Client, users: list[User], photos: int) -> None:
    images = astronaut_variants(photos)
    files = [("files", (f"me{i}.jpg", jpeg(im), "image/jpeg")) for i, im in enumerate(images)]
    jobs = {}
    for user in users:
        r = api.post("/v1/photos", files=files, headers=user.auth)
        r.raise_for_status()
        jobs[r.json()["job"]["id"]] = user
    for job in wait_jobs(api, jobs, timeout=600).values():
        assert job["result"] == {"accepted": photos, "rejected": 0}, job


def start_training(api: httpx.Client, user: User) -> str:
    r = api.post("/v1/likenesses", json={"class_word": "woman"}, headers=user.auth)
    assert r.status_code == 202, r.text
    return r.json()["job"]["id"]


def start_portraits(api: httpx.Client, user: User, styles: list[str]) -> str:
    body = {"likeness_id": user.likeness_id, "styles": styles, "count": 1}
    r = api.post("/v1/portraits", json=body, headers={**user.auth, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 202, r.text
    return r.json()["job"]["id"]


def job_rows(job_ids: list[str]) -> dict[str, dict]:
    """What the database says about each job: timestamps, attempts, the worker that claimed it."""
    from sqlalchemy import func, select

    from shared.db import session_scope
    from shared.models import Job, Likeness, Portrait

    ids = [uuid.UUID(j) for j in job_ids]
    with session_scope() as session:
        counts = select(Portrait.job_id, func.count()).where(Portrait.job_id.in_(ids))
        counts = counts.group_by(Portrait.job_id)
        portraits = dict(session.execute(counts).all())
        rows = {}
        for job in session.scalars(select(Job).where(Job.id.in_(ids))):
            likeness_ready = None
            if job.kind == "train_likeness" and job.result:
                likeness = session.get(Likeness, uuid.UUID(job.result["likeness_id"]))
                likeness_ready = likeness is not None and likeness.status == "ready"
            rows[str(job.id)] = {
                "kind": job.kind,
                "status": str(job.status),
                "attempts": job.attempts,
                "worker": job.worker,
                "wait": (job.started_at - job.created_at).total_seconds(),
                "run": (job.finished_at - job.started_at).total_seconds(),
                "finished_at": job.finished_at,
                "created_at": job.created_at,
                "portraits": portraits.get(job.id, 0),
                "likeness_ready": likeness_ready,
            }
        return rows


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 2),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 2),
        "max": round(ordered[-1], 2),
    }


def warm_up(api: httpx.Client, users: list[User], styles: list[str], timeout: float) -> float:
    """One portrait job per user, at once: with one idle `generate` worker per user, each worker
    takes one (prefetch 1) and loads its models before the clock starts. Returns the seconds."""
    t0 = time.monotonic()
    for job in wait_jobs(api, {start_portraits(api, u, styles[:1]): u for u in users}, timeout).values():
        assert job["status"] == "succeeded", job
    return time.monotonic() - t0


def run_pool(
    cluster: Cluster, api: httpx.Client, pool: int, gpus: int, trained: list[User], fresh: list[User],
    styles: list[str], timeout: float, warm: bool = False, monitor: Callable[[], Any] | None = None,
    rounds: int = 1,
) -> dict:  # fmt: skip
    """`warm`: the generate workers load their models before the burst (see warm_up); `monitor`:
    a context manager factory around the burst whose `summary()` goes into the result; `rounds`:
    portrait jobs per trained user in the burst (a longer burst without training more users)."""
    workers = []
    for i in range(pool):
        pin = {"CUDA_VISIBLE_DEVICES": str(i % gpus)} if gpus else {}
        workers.append(cluster.spawn(f"pool{pool}-generate-{i}", "worker", "generate", **pin))
        workers.append(cluster.spawn(f"pool{pool}-train-{i}", "worker", "train", **pin))
    time.sleep(8)  # the workers connect to Redis (models load on each process's first job)
    # One warm-up job per worker, even with fewer users than workers (a user may run a few jobs).
    warm_users = [trained[i % len(trained)] for i in range(pool)]
    warm_seconds = warm_up(api, warm_users, styles, timeout) if warm else None
    submitted: dict[str, User] = {}
    expected_portraits: dict[str, int] = {}
    t0 = time.monotonic()
    with monitor() if monitor else nullcontext() as watched:
        for _ in range(rounds):
            for user in trained:
                job_id = start_portraits(api, user, styles)
                submitted[job_id] = user
                expected_portraits[job_id] = len(styles)
        for user in fresh:
            submitted[start_training(api, user)] = user
        ended = wait_jobs(api, submitted, timeout)
    wall = time.monotonic() - t0
    cluster.stop(workers)

    rows = job_rows(list(submitted))
    generate = [r for r in rows.values() if r["kind"] == "generate_portraits"]
    train = [r for r in rows.values() if r["kind"] == "train_likeness"]
    first = min(r["created_at"] for r in rows.values())

    def span(rs: list[dict]) -> float:  # first submit -> last job of this kind finished
        return max((r["finished_at"] - first).total_seconds() for r in rs) if rs else 0.0

    portraits = sum(r["portraits"] for r in generate)
    problems = [
        f"{job_id}: {row['status']}, {row['attempts']} attempt(s), {row['portraits']} portraits"
        for job_id, row in rows.items()
        if row["status"] != "succeeded"
        or row["attempts"] != 1
        or (row["kind"] == "generate_portraits" and row["portraits"] != expected_portraits[job_id])
        or (row["kind"] == "train_likeness" and not row["likeness_ready"])
    ]
    by_worker: dict[str, dict[str, int]] = {}  # "host:pid" of the pool process -> jobs by kind
    for row in rows.values():
        jobs = by_worker.setdefault(row["worker"].rsplit(":", 1)[0], {})  # the claim's token dropped
        jobs[row["kind"]] = jobs.get(row["kind"], 0) + 1
    result = {
        "pool": pool,
        "jobs": len(submitted),
        "jobs_ended": len(ended),
        "lost_or_duplicated": problems,
        "wall_seconds": round(wall, 1),
        "portraits": portraits,
        "portraits_per_minute": round(60 * portraits / span(generate), 2) if generate else None,
        "trainings": len(train),
        "trainings_per_minute": round(60 * len(train) / span(train), 2) if train else None,
        "queue_wait_seconds": {"generate": summary([r["wait"] for r in generate]),
                               "train": summary([r["wait"] for r in train])},
        "run_seconds": {"generate": summary([r["run"] for r in generate]),
                        "train": summary([r["run"] for r in train])},
        "jobs_per_worker": list(by_worker.values()),
        "warm_up_seconds": round(warm_seconds, 1) if warm_seconds is not None else None,
        **({"monitor": watched.summary()} if watched is not None else {}),
    }  # fmt: skip
    print(json.dumps(result), flush=True)
    return result


def start_product(preset: str, gpu: bool, **env_overrides: str) -> tuple[LocalStack, Cluster, httpx.Client]:
    """The local stack, migrations, gateway, relay, scheduler, `photos` and `notify` workers, in a
    fresh temp dir; this process's environment points at them (for job_rows). `env_overrides`
    (e.g. MODEL_DIR) win over the defaults and the caller's environment."""
    root = Path(tempfile.mkdtemp(prefix="studio-scale-"))
    root.chmod(0o755)  # pgserver runs PostgreSQL as its own user
    stack = LocalStack(root, base_port=free_port_block(6)).start()
    port = free_port()
    env = {
        **os.environ, **stack.env(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PUBLIC_URL": f"http://127.0.0.1:{port}", "LOG_JSON": "false",
        "MODEL_PRESET": preset, "RELAY_POLL_SECONDS": "0.1", "HEALTH_PORT": "0",
        "AUTH_RATE_LIMIT": "10000/minute", "UPLOAD_RATE_LIMIT": "10000/minute",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4" if gpu else "1"),
    }  # fmt: skip
    if preset == "tiny":
        env.setdefault("MODEL_DIR", str(REPO / "var" / "test-models"))  # tiny models, cached
    env.update(env_overrides)
    os.environ.update(env)
    cluster = Cluster(root, env)
    try:
        subprocess.run([sys.executable, "-m", "shared.cli", "migrate"], env=env, check=True, cwd=REPO)
        cluster.spawn("gateway", "gateway", "--port", str(port))
        cluster.spawn("relay", "relay")
        cluster.spawn("scheduler", "scheduler")
        cluster.spawn("worker-photos", "worker", "photos")
        cluster.spawn("worker-notify", "worker", "notify")
        wait_for_port(port, timeout=120)
    except BaseException:
        stop_product(stack, cluster)
        raise
    return stack, cluster, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)


def stop_product(stack: LocalStack, cluster: Cluster) -> None:
    cluster.stop_all()
    stack.stop()
    shutil.rmtree(stack.root, ignore_errors=True)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C: every `finally` runs


@contextmanager
def product(
    preset: str, gpu: bool, **env_overrides: str
) -> Iterator[tuple[LocalStack, Cluster, httpx.Client]]:
    """start_product() for a `with` block that stops every server, worker and temp dir on any
    exit: an error, Ctrl-C, SIGTERM (`timeout`, a batch system). While it stops, further SIGINT
    and SIGTERM are ignored, so an impatient second Ctrl-C cannot leave servers running."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        stack, cluster, api = start_product(preset, gpu, **env_overrides)
        try:
            yield stack, cluster, api
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stop_product(stack, cluster)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", default="1,2", help="pool sizes to run, e.g. 1,2,4")
    parser.add_argument("--gpus", type=int, default=0, help="pin worker i to GPU i %% G (0: no pinning)")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "sd15"])
    parser.add_argument("--portrait-users", type=int, default=4, help="users asking for portraits per burst")
    parser.add_argument("--training-users", type=int, default=2, help="new users training per burst")
    parser.add_argument("--styles", default="studio-business,black-white")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--warm", action="store_true", help="generate workers load models before the burst")
    parser.add_argument("--out", default=None, help="JSON report path")
    args = parser.parse_args()
    pools = [int(p) for p in args.pools.split(",")]
    styles = args.styles.split(",")
    if min(pools) < 1 or args.portrait_users < 1 or args.training_users < 0 or args.gpus < 0:
        parser.error("pool sizes and --portrait-users must be >= 1, --training-users and --gpus >= 0")

    report = {"preset": args.preset, "gpus": args.gpus, "styles": styles, "cpus": os.cpu_count(), "pools": []}
    with product(args.preset, gpu=bool(args.gpus)) as (_, cluster, api):
        # Users who already have a likeness (trained for real, before the clock starts), and
        # fresh users for each burst's trainings.
        trained = [signed_up_user(api) for _ in range(args.portrait_users)]
        fresh = [[signed_up_user(api) for _ in range(args.training_users)] for _ in pools]
        print(f"uploading photos for {len(trained) + sum(map(len, fresh))} users ...", flush=True)
        upload_photos(api, trained + [u for group in fresh for u in group], args.photos)
        print("training the portrait users' likenesses (not timed) ...", flush=True)
        prep = [cluster.spawn(f"prep-train-{i}", "worker", "train") for i in range(max(pools))]
        jobs = {start_training(api, user): user for user in trained}
        for job in wait_jobs(api, jobs, args.timeout).values():
            assert job["status"] == "succeeded", job
            jobs[job["id"]].likeness_id = job["result"]["likeness_id"]
        cluster.stop(prep)

        for pool, group in zip(pools, fresh, strict=True):
            print(f"pool of {pool}: {len(trained)} portrait jobs + {len(group)} trainings", flush=True)
            result = run_pool(cluster, api, pool, args.gpus, trained, group, styles, args.timeout, args.warm)
            report["pools"].append(result)
        base = report["pools"][0]
        for result in report["pools"]:
            for key in ("portraits_per_minute", "trainings_per_minute"):
                if base[key] and result[key]:
                    result[f"{key}_vs_pool_{base['pool']}"] = round(result[key] / base[key], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
