"""The whole product on GPUs: upload-to-inbox time, scale-out over GPUs, a killed worker.

Device-call sequence (one command per call, back to back: /tmp stays only while the machine is
warm, 30 s after a call). Here first: `bash bench/gpu_stack_wheels.sh` (writes .carry/1..4, each under
58 MiB; the last is SeaweedFS alone, so the last two travel together). On `nvidia-h200-x2` (or
`nvidia-h200` for the journey and a one-GPU `kill --gpus 1`), timeout_s 600 each:

  1. carry [".carry/1"]  . bench/gpu_stack_install.sh
  2. carry [".carry/2"]  . bench/gpu_stack_install.sh
  3. carry [".carry/3", ".carry/4"]  . bench/gpu_stack_install.sh &&
       python3 bench/sd15_random.py --model-dir /tmp/models && python3 bench/gpu_e2e.py journey
  4. carry []            . bench/gpu_stack_install.sh && python3 bench/gpu_e2e.py scale --gpus 2
  5. carry []            . bench/gpu_stack_install.sh && python3 bench/gpu_e2e.py kill --gpus 2

The JSON lands in $OUT/gpu_e2e_<mode>.json, the servers' and workers' logs in
$OUT/logs_<mode>.tar.gz; each mode stops itself at --deadline (540 s) with a partial report.

Everything is the real product on SD-1.5-SIZED RANDOM weights (bench/sd15_random.py, loaded
through MODEL_MANIFEST; images are noise, the seconds are real): the local stack (Postgres,
Redis, SeaweedFS S3, an SMTP catcher), migrations, gateway, outbox relay, scheduler (reaper),
Celery workers (`photos`, `notify` on the CPU; `train` and `generate` pinned to GPUs with
CUDA_VISIBLE_DEVICES, one process per GPU). Users act through the public HTTP API.

Modes:
- journey: a user signs up, confirms the address from the mail, consents, uploads 10 face
  photos, trains a likeness, asks for 8 portraits (4 in each of two styles); the time of each
  step from the upload to the `portraits_ready` mail in the Maildir: photo checks, queue waits,
  training, generation, mail, and the client's own gaps (polling, requests). Two users in turn:
  "cold" (workers load their models in the first job) and "warm".
- scale: bench/scale_out.py's burst (--rounds portrait jobs, 1 portrait in each style, from each
  of --portrait-users trained users; --training-users new users' trainings, default none) with 1 GPU
  and then with --gpus GPUs in the same run (one generate + one train worker per GPU; the generate
  workers warmed up first); portraits per minute, queue waits, GPU utilisation per device
  (nvidia-smi sampling), and exactly-once: each job ran once, portrait rows and S3 objects match.
- kill: two generate workers (GPU 0 and GPU 1 % --gpus), warmed up; a portrait job starts, its
  worker is SIGKILLed mid-job; the reaper re-queues it, the other worker finishes it exactly once
  (2 attempts, the expected rows and objects, one mail). Reports the time to recovery.

    python bench/gpu_e2e.py journey --tiny               # CPU smoke tests, tiny preset
    python bench/gpu_e2e.py scale --tiny --gpus 2 --portrait-users 2
    python bench/gpu_e2e.py kill --tiny --count 2
"""

from __future__ import annotations

import argparse
import json
import mailbox
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from email import message_from_bytes, policy
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import scale_out  # noqa: E402
from bench.scale_out import User, job_rows, summary, wait_jobs  # noqa: E402
from tests.pictures import astronaut_variants, jpeg  # noqa: E402

STYLES = ["studio-business", "black-white"]


# -- observing: GPUs, mail, jobs ------------------------------------------------------------------


class GpuMonitor:
    """nvidia-smi sampling (every `interval_ms`) while inside the `with`: utilisation and memory
    per GPU index. Without nvidia-smi (CPU runs) the summary says so."""

    def __init__(self, interval_ms: int = 500):
        self.interval_ms = interval_ms
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None

    def __enter__(self) -> GpuMonitor:
        query = ["--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", *query, f"--loop-ms={self.interval_ms}"], stdout=subprocess.PIPE, text=True
            )
        except FileNotFoundError:
            self.error = "nvidia-smi not found (no GPU)"
            return self
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[0].isdigit():
                self.samples.setdefault(f"gpu{parts[0]}", []).append((float(parts[1]), float(parts[2])))

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def summary(self) -> dict:
        if self.error:
            return {"error": self.error}
        return {
            gpu: {
                "utilization_percent": summary([u for u, _ in rows]),
                "memory_used_mib_max": max(m for _, m in rows),
                "samples": len(rows),
            }
            for gpu, rows in sorted(self.samples.items())
        }


def mails_to(mail_dir: Path, address: str) -> list[tuple[float, object]]:
    """(delivery time = the Maildir file's mtime, message) of every mail to `address`."""
    box = mailbox.Maildir(mail_dir, create=False)
    found = []
    for key in box.iterkeys():
        msg = message_from_bytes(box.get_bytes(key), policy=policy.default)
        if msg["To"] == address:
            sub = "cur" if (mail_dir / "cur" / key).exists() else "new"
            paths = list((mail_dir / sub).glob(f"{key}*"))
            found.append((paths[0].stat().st_mtime if paths else time.time(), msg))
    return sorted(found, key=lambda m: m[0])


def wait_mail(mail_dir: Path, address: str, subject: str, timeout: float) -> float:
    """Poll the Maildir (every 0.1 s) for a mail with `subject`; its delivery time (epoch s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = [t for t, msg in mails_to(mail_dir, address) if msg["Subject"] == subject]
        if hits:
            return hits[0]
        time.sleep(0.1)
    raise TimeoutError(f"no mail {subject!r} to {address} in {timeout:.0f}s")


def portraits_subject(count: int) -> str:
    from services.notifier.i18n import Translator

    return Translator("en")("portraits_ready.subject", count=count)


def verify_address(api: httpx.Client, mail_dir: Path, user: User) -> None:
    """Open the confirmation link of the signup mail (its token), as the web page does."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for _, msg in mails_to(mail_dir, user.email):
            found = re.search(r"#/verify\?token=([A-Za-z0-9_\-]+)", msg.get_body(("plain",)).get_content())
            if found:
                api.post("/v1/auth/verify-email", json={"token": found.group(1)}).raise_for_status()
                return
        time.sleep(0.2)
    raise TimeoutError(f"no confirmation mail to {user.email}")


def poll_job(api: httpx.Client, user: User, job_id: str, timeout: float, until=None) -> dict:
    """Poll a job (every 0.1 s) until it ended, or until `until(job)` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
        if job["status"] in scale_out.ENDED or (until and until(job)):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s")


def portraits_match_objects(user_ids: list[str]) -> list[str]:
    """Exactly-once on storage: each user's portrait rows name exactly the PNG + thumbnail objects
    under the user's portraits/ prefix in S3, no more (no orphan of a killed attempt), no less."""
    from sqlalchemy import select

    from shared import storage
    from shared.db import session_scope
    from shared.models import Portrait

    problems = []
    with session_scope() as session:
        for user_id in user_ids:
            rows = session.scalars(select(Portrait).where(Portrait.user_id == uuid.UUID(user_id))).all()
            named = {r.object_key for r in rows} | {r.thumb_key for r in rows if r.thumb_key}
            stored = set(storage.list_keys(storage.user_key(user_id, "portraits")))
            if named != stored:
                problems.append(
                    f"user {user_id}: {len(named - stored)} rows without object, "
                    f"{len(stored - named)} objects without row"
                )
    return problems


def claimed_by(job_id: str) -> str:
    """The `worker` (host:pid:claim token) of a job's current attempt."""
    from shared.db import session_scope
    from shared.models import Job

    with session_scope() as session:
        return session.get(Job, uuid.UUID(job_id)).worker


def user_id(api: httpx.Client, user: User) -> str:
    return api.get("/v1/me", headers=user.auth).json()["id"]


def verified_users(api: httpx.Client, stack, n: int) -> list[User]:
    """`n` users signed up, consented, with a confirmed address (mail goes only to those)."""
    users = [scale_out.signed_up_user(api) for _ in range(n)]
    for user in users:
        verify_address(api, stack.mail_dir, user)
    return users


def trained_users(api: httpx.Client, stack, cluster: scale_out.Cluster, n: int, args) -> list[User]:
    """`n` users with photos and a ready likeness (one pinned train worker per GPU, not timed)."""
    users = verified_users(api, stack, n)
    scale_out.upload_photos(api, users, args.photos)
    prep = [
        cluster.spawn(f"prep-train-{i}", "worker", "train", **pin(i, args)) for i in range(max(args.gpus, 1))
    ]
    jobs = {scale_out.start_training(api, u): u for u in users}
    for job in wait_jobs(api, jobs, args.timeout).values():
        assert job["status"] == "succeeded", job
        jobs[job["id"]].likeness_id = job["result"]["likeness_id"]
    cluster.stop(prep)
    return users


def pin(i: int, args) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": str(i % args.gpus)} if args.gpus else {}


def seconds(a, b) -> float:
    return round((b - a).total_seconds(), 2)


# -- (a) one user's journey -------------------------------------------------------------------------


def journey(api: httpx.Client, stack, label: str, args) -> dict:
    (user,) = verified_users(api, stack, 1)
    files = [
        ("files", (f"me{i}.jpg", jpeg(im), "image/jpeg"))
        for i, im in enumerate(astronaut_variants(args.photos))
    ]
    count = args.count
    t0 = time.time()  # the clock: the user presses "upload"
    r = api.post("/v1/photos", files=files, headers=user.auth)
    r.raise_for_status()
    upload_request = time.time() - t0
    photos_job = r.json()["job"]["id"]
    job = poll_job(api, user, photos_job, args.timeout)
    assert job["result"] == {"accepted": args.photos, "rejected": 0}, job
    train_job = scale_out.start_training(api, user)
    job = poll_job(api, user, train_job, args.timeout)
    assert job["status"] == "succeeded", job
    user.likeness_id = job["result"]["likeness_id"]
    train_result = job["result"]
    body = {"likeness_id": user.likeness_id, "styles": STYLES, "count": count}
    r = api.post("/v1/portraits", json=body, headers={**user.auth, "Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 202, r.text
    generate_job = r.json()["job"]["id"]
    job = poll_job(api, user, generate_job, args.timeout)
    assert job["status"] == "succeeded", job
    generate_result = job["result"]
    subject = portraits_subject(count * len(STYLES))
    inbox = wait_mail(stack.mail_dir, user.email, subject, timeout=120)

    rows = job_rows([photos_job, train_job, generate_job])
    photos, train, generate = rows[photos_job], rows[train_job], rows[generate_job]
    total = inbox - t0
    steps = {
        "upload_request": round(upload_request, 2),
        "photo_checks": {"queue_wait": round(photos["wait"], 2), "run": round(photos["run"], 2)},
        "training": {
            "queue_wait": round(train["wait"], 2),
            "run": round(train["run"], 2),
            "stages": train_result.get("seconds"),
        },  # fmt: skip
        "generation": {
            "queue_wait": round(generate["wait"], 2),
            "run": round(generate["run"], 2),
            "stages": generate_result.get("seconds"),
        },
        "mail": round(inbox - generate["finished_at"].timestamp(), 2),
    }
    # The client's own time between jobs: noticing the end (polling every 0.1 s) + the next request.
    gaps = seconds(photos["finished_at"], train["created_at"]) + seconds(
        train["finished_at"], generate["created_at"]
    )
    mails = [m for _, m in mails_to(stack.mail_dir, user.email) if m["Subject"] == subject]
    result = {
        "flow": label,
        "photos": args.photos,
        "portraits": generate["portraits"],
        "upload_to_inbox_seconds": round(total, 2),
        "product_seconds": round(total - gaps, 2),
        "client_gaps_seconds": round(gaps, 2),
        "steps": steps,
        "portraits_ready_mails": len(mails),
        "exactly_once_storage": portraits_match_objects([user_id(api, user)]),  # problems; [] = none
    }
    print(json.dumps(result), flush=True)
    assert generate["portraits"] == count * len(STYLES) and len(mails) == 1, result
    return result


def run_journey(api: httpx.Client, stack, cluster, args, report: dict) -> None:
    cluster.spawn("generate-0", "worker", "generate", **pin(0, args))
    cluster.spawn("train-0", "worker", "train", **pin(0, args))
    time.sleep(5)  # the workers connect to Redis; models load in each one's first job
    report["flows"] = []  # filled as each flow ends: a deadline keeps what finished
    for label in ["cold"] if args.cold_only else ["cold", "warm"]:
        report["flows"].append(journey(api, stack, label, args))


# -- (b) scale-out over GPUs ------------------------------------------------------------------------


def run_scale(api: httpx.Client, stack, cluster, args, report: dict) -> None:
    pools = sorted({1, max(args.gpus, 1)})
    trained = trained_users(api, stack, cluster, args.portrait_users, args)
    fresh = [verified_users(api, stack, args.training_users) for _ in pools]
    scale_out.upload_photos(api, [u for group in fresh for u in group], args.photos)
    results = report["pools"] = []  # filled as each pool ends: a deadline keeps what finished
    for pool, group in zip(pools, fresh, strict=True):
        jobs = len(trained) * args.rounds
        print(f"{pool} GPU(s): {jobs} portrait jobs + {len(group)} trainings", flush=True)
        results.append(
            scale_out.run_pool(
                cluster, api, pool, args.gpus, trained, group, STYLES, args.timeout,
                warm=True, monitor=GpuMonitor, rounds=args.rounds,
            )
        )  # fmt: skip
    base = results[0]
    for result in results[1:]:
        for key in ("portraits_per_minute", "trainings_per_minute"):
            if base[key] and result[key]:
                result[f"{key}_vs_1_gpu"] = round(result[key] / base[key], 2)
    ids = [user_id(api, u) for u in trained + [u for g in fresh for u in g]]
    report["exactly_once_storage"] = portraits_match_objects(ids)


# -- (c) a generate worker SIGKILLed mid-job --------------------------------------------------------


def run_kill(api: httpx.Client, stack, cluster, args, report: dict) -> None:
    users = trained_users(api, stack, cluster, 2, args)
    workers = [cluster.spawn(f"generate-{i}", "worker", "generate", **pin(i, args)) for i in range(2)]
    time.sleep(8)
    scale_out.warm_up(api, users, STYLES, args.timeout)  # both workers load their models
    victim_user = users[0]
    body = {"likeness_id": victim_user.likeness_id, "styles": STYLES, "count": args.count}
    r = api.post(
        "/v1/portraits", json=body, headers={**victim_user.auth, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]["id"]
    running = poll_job(api, victim_user, job_id, args.timeout, until=lambda j: j["progress"] >= args.kill_at)
    assert running["status"] == "running", running
    pid = int(claimed_by(job_id).split(":")[1])  # host:pid:token of the claiming (pool) process
    victim = next(w for w in workers if os.getpgid(pid) == w.pid)  # each worker: its own group
    killed_at = time.time()
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    print(
        f"SIGKILLed worker {victim.pid} at progress {running['progress']:.2f} ({running['stage']})",
        flush=True,
    )
    job = poll_job(api, victim_user, job_id, args.timeout)
    done = time.time()
    row = job_rows([job_id])[job_id]
    subject = portraits_subject(args.count * len(STYLES))
    inbox = wait_mail(stack.mail_dir, victim_user.email, subject, timeout=120)
    time.sleep(3)  # a duplicate mail would arrive about now
    mails = [m for _, m in mails_to(stack.mail_dir, victim_user.email) if m["Subject"] == subject]
    expected = args.count * len(STYLES)
    result = {
        "killed_at_progress": round(running["progress"], 3),
        "killed_in_stage": running["stage"],
        "status": job["status"],
        "attempts": job["attempts"],
        "finished_by_other_worker": row["worker"].split(":")[1] != str(pid),
        "recovery_seconds": {
            "kill_to_reclaimed": round(row["created_at"].timestamp() + row["wait"] - killed_at, 2),
            "kill_to_finished": round(done - killed_at, 2),
            "kill_to_inbox": round(inbox - killed_at, 2),
        },
        "job_stale_seconds": float(os.environ.get("JOB_STALE_SECONDS", 60)),
        "portraits": row["portraits"],
        "portraits_expected": expected,
        "portraits_ready_mails": len(mails),
        "exactly_once_storage": portraits_match_objects([user_id(api, u) for u in users]),
    }
    result["exactly_once"] = (
        job["status"] == "succeeded"
        and job["attempts"] == 2
        and row["portraits"] == expected
        and len(mails) == 1
        and not result["exactly_once_storage"]
    )
    print(json.dumps(result), flush=True)
    report.update(result)


# -- main -------------------------------------------------------------------------------------------

MODES = {"journey": run_journey, "scale": run_scale, "kill": run_kill}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("mode", choices=list(MODES), help="journey | scale | kill (see the module docstring)")
    parser.add_argument("--tiny", action="store_true", help="tiny preset on the CPU (smoke test)")
    parser.add_argument(
        "--gpus", type=int, default=None, help="GPUs to pin workers to (None: all seen; tiny: 0)"
    )
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/models"), help="bench/sd15_random.py's")
    parser.add_argument("--photos", type=int, default=10, help="photos each user uploads")
    parser.add_argument("--count", type=int, default=4, help="portraits per style (journey, kill)")
    parser.add_argument("--portrait-users", type=int, default=2, help="scale: users asking for portraits")
    parser.add_argument("--rounds", type=int, default=6, help="scale: portrait jobs per user per burst")
    parser.add_argument("--training-users", type=int, default=0, help="scale: new users training, per pool")
    parser.add_argument("--kill-at", type=float, default=0.2, help="kill: job progress at the SIGKILL")
    parser.add_argument("--cold-only", action="store_true", help="journey: the first (cold) user only")
    parser.add_argument("--timeout", type=float, default=None, help="per wait, s (None: 420, tiny 900)")
    parser.add_argument("--deadline", type=float, default=540, help="stop and report after this many s")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (None: $OUT/gpu_e2e_<mode>.json)")
    args = parser.parse_args()
    _check(parser, args)
    env: dict[str, str] = {}
    if not args.tiny:
        manifest = args.model_dir / "random-weights-manifest.yaml"
        if not manifest.exists():
            sys.exit(f"{manifest} missing: run python3 bench/sd15_random.py --model-dir {args.model_dir}")
        env = {"MODEL_DIR": str(args.model_dir), "MODEL_MANIFEST": str(manifest)}
    if args.mode in ("scale", "kill"):  # a burst queues more jobs per user than a user may run at once
        env["MAX_RUNNING_JOBS_PER_USER"] = str(args.rounds + 2)

    preset = "tiny" if args.tiny else "sd15 (random weights)"
    report = {"mode": args.mode, "preset": preset, "gpus": args.gpus, "gpu_names": _gpu_names(),
              "cpus": os.cpu_count(), "styles": STYLES, "command": " ".join(sys.argv)}  # fmt: skip
    started = time.monotonic()
    saved = False
    _stop_after(args.deadline)  # a device call ends at 600 s: leave time to write the report
    try:
        # The product stops on any exit, Ctrl-C and SIGTERM included (scale_out.product).
        with scale_out.product("tiny" if args.tiny else "sd15", gpu=not args.tiny, **env) as product:
            stack, cluster, api = product
            try:
                MODES[args.mode](api, stack, cluster, args, report)  # fills the report as it goes
            except BaseException as exc:
                report["error"] = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                signal.alarm(0)
                _save(report, args, started, cluster.logs)  # before the stop removes the logs
                saved = True
    except BaseException as exc:
        signal.alarm(0)
        if not saved:  # the product never came up
            report["error"] = f"{type(exc).__name__}: {exc}"
            _save(report, args, started, None)
        raise


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse arguments that would only fail minutes later (or silently measure nothing)."""
    if args.timeout is None:
        args.timeout = 900 if args.tiny else 420
    seen = 0 if args.tiny else _visible_gpus()  # nvidia-smi once
    if args.gpus is None:
        args.gpus = seen
    problems = [
        f"--{name} must be at least {low}"
        for name, value, low in [
            ("deadline", args.deadline, 1), ("timeout", args.timeout, 1), ("photos", args.photos, 1),
            ("count", args.count, 1), ("portrait-users", args.portrait_users, 1),
            ("rounds", args.rounds, 1), ("training-users", args.training_users, 0), ("gpus", args.gpus, 0),
        ]
        if value < low
    ]  # fmt: skip
    if not args.tiny and args.gpus > seen:
        problems.append(f"--gpus {args.gpus}, but nvidia-smi lists {seen} GPU(s)")
    if not 0 < args.kill_at < 1:
        problems.append("--kill-at is a job progress between 0 and 1")
    args.out = args.out or (
        Path(os.environ["OUT"]) / f"gpu_e2e_{args.mode}.json" if os.environ.get("OUT") else None
    )
    if args.out and not os.access(args.out.parent, os.W_OK):
        problems.append(f"--out {args.out}: its folder does not exist or is not writable")
    if problems:
        parser.error("; ".join(problems))


def _save(report: dict, args: argparse.Namespace, started: float, logs: Path | None) -> None:
    """Print the report and write it (and the servers' logs) to --out; a write error is printed,
    never raised, so the product still stops."""
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(report, indent=2, default=str)
    print(text, flush=True)
    if not args.out:
        return
    try:
        args.out.write_text(text)
        if logs is not None:
            with tarfile.open(args.out.with_name(f"logs_{args.mode}.tar.gz"), "w:gz") as tar:
                tar.add(logs, arcname="logs")
    except OSError as exc:
        print(f"could not write the report to {args.out}: {exc}", file=sys.stderr, flush=True)


def _stop_after(seconds: float) -> None:
    def fire(*_: object) -> None:
        raise TimeoutError(f"--deadline of {seconds:.0f} s reached; the report holds what finished")

    signal.signal(signal.SIGALRM, fire)
    signal.alarm(int(seconds))


def _visible_gpus() -> int:
    """GPUs `nvidia-smi -L` lists (its "GPU n:" lines; MIG devices are indented under them)."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.splitlines()
    except FileNotFoundError:
        return 0
    return sum(line.startswith("GPU ") for line in listed)


def _gpu_names() -> list[str]:
    try:
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        return subprocess.run(query, capture_output=True, text=True).stdout.splitlines()
    except FileNotFoundError:
        return []


if __name__ == "__main__":
    main()
