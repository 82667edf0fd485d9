"""All settings of every service, in one pydantic-settings class.

Values come from the environment (or a `.env` file). The defaults describe the
local stack that `make run` starts; production overrides them with environment
variables and must replace every placeholder secret (checked in `validate_secrets`).
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# 32+ bytes, as RFC 7518 3.2 asks of an HS256 key (PyJWT warns below that); public all the same.
PLACEHOLDER_SECRET = "dev-only-change-me-this-is-public-not-a-secret"
DEV_S3_ACCESS_KEY = "studio-dev-key"  # the local SeaweedFS's key (shared/localstack.py)
REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting never prints the values (secrets) it was given
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    environment: Literal["development", "test", "production"] = "development"
    public_url: str = "http://127.0.0.1:8000"
    var_dir: Path = REPO_ROOT / "var"

    # Infrastructure
    database_url: str = "postgresql+psycopg://studio@/studio?host=/tmp"
    redis_url: str = "redis://127.0.0.1:6390/0"
    # Connections a process keeps open, and may add under load (closed again when returned to a full
    # pool: keep the pool near the gateway's concurrency so requests do not open one each).
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # The gateway's async pool for its signed-in reads (shared/db_async.py), beside the one above:
    # one statement each on the event loop, so a few connections serve its whole concurrency.
    db_read_pool_size: int = 4
    s3_endpoint_url: str | None = "http://127.0.0.1:8333"
    s3_public_endpoint_url: str | None = None  # where browsers reach S3, if different
    s3_region: str = "us-east-1"
    s3_bucket: str = "portrait-studio"
    s3_access_key_id: str = DEV_S3_ACCESS_KEY
    s3_secret_access_key: str = PLACEHOLDER_SECRET
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: Literal["none", "starttls", "ssl"] = "none"
    smtp_from: str = "Portrait Studio <portraits@localhost>"

    # Timeouts: how long a process waits for a dependency before it gives up (seconds).
    # The gateway answers 503 + Retry-After within ~3 s (S3 up to 4 s) when one of them is down or hung
    # (README, "When a dependency is down"); workers retry by themselves.
    database_connect_timeout: int = 2  # libpq connect_timeout (libpq's minimum is 2)
    database_read_timeout: float = 2.0  # client-side wait for any answer of the server
    database_statement_timeout_ms: int = 30_000  # server-side statement_timeout
    # server-side lock_timeout: a wait for a row or advisory lock ends (LockNotAvailable) before
    # database_read_timeout, which would take the wait for a hung server (shared/db.py)
    database_lock_timeout_ms: int = 1000
    database_pool_timeout: float = 2.0  # SQLAlchemy pool_timeout: wait for a free connection
    database_ping_idle_seconds: float = 1.0  # a pooled connection idle longer is pinged before use
    redis_connect_timeout: float = 1.0  # redis-py socket_connect_timeout
    redis_socket_timeout: float = 1.0  # redis-py socket_timeout (each command)
    s3_connect_timeout: float = 1.0  # botocore Config.connect_timeout
    # botocore Config.read_timeout (each socket read); a PUT on a hung server also waits 1 s for
    # "100 Continue" first, so an upload gives up after 2.5 s.
    s3_read_timeout: float = 1.5
    s3_max_attempts: int = 1  # botocore retries total_max_attempts (1 = no retry)
    smtp_timeout: float = 10.0  # smtplib timeout (connect and each command)
    # The notifier's tries of one mail: waits 2, 4, 8 ... 60 s (jittered), about 3 minutes in all;
    # after that the send_email job itself is retried (job_max_attempts).
    smtp_attempts: int = 8
    smtp_backoff_seconds: float = 2.0
    smtp_backoff_max_seconds: float = 60.0
    readiness_timeout: float = 0.8  # /readyz waits this long for each dependency
    # /readyz writes a tiny object at most this often (a full disk still answers reads)
    readiness_write_probe_seconds: float = 30.0
    retry_after_seconds: int = 60  # Retry-After of a 503 while a dependency is down

    # Auth
    secret_key: str = PLACEHOLDER_SECRET  # signs access tokens
    access_token_minutes: int = 15
    refresh_token_days: int = 30
    auth_rate_limit: str = "10/minute"
    # Wrong passwords one account may be tried with, whatever the clients' addresses (the per-client
    # AUTH_RATE_LIMIT alone lets many addresses guess one password): past it, 429 until the window
    # moves on (OWASP Authentication Cheat Sheet: throttle per account, not only per address).
    login_failures_per_account: str = "10/15minutes"
    upload_rate_limit: str = "60/minute"
    # account mails of one kind (sign-up attempts; password resets) one address receives, whoever asks
    account_mail_rate_limit: str = "5/hour"
    email_verify_hours: int = 48
    password_reset_minutes: int = 30

    # Request bodies other than uploads (services/gateway/body_limits.py): larger -> 413
    json_body_max_bytes: int = 64 * 1024
    # Seconds the gateway waits for the next part of a request body (408 after); like nginx's
    # client_body_timeout, between reads, not for the whole body.
    request_body_timeout: float = 15.0
    # The request line and headers (services/gateway/http_protocol.py): larger -> 431; not complete
    # this many seconds after the connection opened (or the request's first byte) -> 408.
    request_header_max_bytes: int = 32 * 1024
    request_header_timeout: float = 10.0

    # Uploads (decoded defensively, see shared/images.py)
    upload_max_bytes: int = 15 * 1024 * 1024
    upload_max_pixels: int = 40_000_000
    upload_max_files: int = 20
    photos_per_user_max: int = 100  # every photo row a user has, rejected ones too (biometric data)
    poses_per_user_max: int = 50  # every pose photo row a user has, rejected ones too
    presign_seconds: int = 300
    photo_retention_days: int = 30
    # An object written before its row committed (the writer was killed in between) is deleted by
    # the hourly sweep once this old; far longer than any request or per-portrait upload.
    pending_object_grace_seconds: int = 3600

    # Face check and training set
    min_training_photos: int = 8  # accepted photos needed to train a likeness
    face_min_px: int = 128
    blur_min_variance: float = 40.0

    # Jobs
    # A worker killed whole (no process left to re-queue its task) is noticed by the scheduler once
    # its heartbeat is JOB_STALE_SECONDS old: re-claimed within stale + reaper interval + the relay's
    # poll, about 12 s (ARCHITECTURE.md, "The job contract").
    job_heartbeat_seconds: float = 2.0
    job_stale_seconds: float = 10.0
    job_max_attempts: int = 3
    reaper_interval_seconds: float = 1.0
    # An attempt that failed because Postgres, Redis or S3 was down is given back (not counted)
    # while the outage is younger than this: a 5-minute outage fails no job.
    job_outage_window_seconds: float = 900.0
    # A mail server that does not answer (or answers 4xx) is waited out this long, as a mail server
    # keeps a message it cannot deliver yet: RFC 5321 4.5.4.1, "the give-up time generally needs to
    # be at least 4-5 days". Before, five attempts (about 20 minutes) and the mail was lost.
    mail_outage_window_seconds: float = 4 * 86400.0
    job_retry_scale: float = 1.0  # multiplies every retry backoff (tests shorten it)
    # How often the scheduler deletes the objects of deleted rows (and orphans) and finishes
    # erasures a failed job left (seconds).
    cleanup_interval_seconds: float = 10.0
    relay_poll_seconds: float = 0.5
    celery_visibility_timeout: int = 3 * 3600  # longer than the longest task
    task_time_limit: int = 2 * 3600  # hard limit (s): Celery kills the process
    # Soft limit (s): the attempt is asked to stop (SoftTimeLimitExceeded) and retried or failed in
    # words; unset: a minute before the hard limit.
    task_soft_time_limit: int | None = None

    # Fair share on the GPU pool
    max_running_jobs_per_user: int = 2
    max_portraits_per_day: int = 200

    # Models: "tiny" builds SD-1.5-shaped random models from configs (demo, CI);
    # "sd15" loads real weights listed in the model manifest.
    model_preset: Literal["tiny", "sd15"] = "tiny"
    model_dir: Path = REPO_ROOT / "var" / "models"
    # A model manifest used instead of shared/ml/manifest.yaml: the explicit opt-out for the random
    # bench weights of bench/sd15_random.py (its own hashes). Production leaves it unset.
    model_manifest: Path | None = None
    device: str = "auto"
    # CUDA graphs of the generator's UNet and ControlNets (services/generator/graphed.py): captured
    # per shape in seconds at warm-up, no compiler; used on CUDA unless the networks are compiled.
    cuda_graphs: Literal["on", "off"] = "on"
    # torch.compile of the same networks for the styles' fixed shape buckets instead
    # (services/generator/compiled.py): "auto" = on for CUDA, off on the CPU (tiny preset, tests).
    # Off by default: minutes of compiling per worker start (a minute with the compile cache under
    # model_dir/compile-cache) for no faster set than CUDA graphs (bench/results/, issue 21).
    compile_networks: Literal["auto", "on", "off"] = "off"
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    # torch.compile of the trainer's UNet inside its CUDA-graphed step (services/trainer/lora.py):
    # 44.3 instead of 58.5 ms/step on an H100, after a 183 s cold compile per worker start that
    # the compile cache turns into a load (bench/results/train_h100_compiled_step.json). "auto" =
    # on for CUDA. Off by default: without a compile cache that outlives the pod (the base
    # manifests' emptyDir) each start would pay the cold compile; the prod overlay turns it on.
    train_compile: Literal["auto", "on", "off"] = "off"
    # Where torch.compile's caches live (shared/ml/compile_cache.py); unset: MODEL_DIR/compile-cache.
    compile_cache_dir: Path | None = None

    log_json: bool = True
    # /healthz, /readyz, /metrics of every process (the gateway's /metrics only here, never public); 0 = off
    health_port: int = 9100
    # The address the health port binds: all interfaces in a pod (the kubelet and Prometheus reach
    # it); `studio run` binds it to 127.0.0.1, like the public port.
    health_host: str = "0.0.0.0"

    def redis_options(self) -> dict[str, float | bool]:
        """Keyword arguments of every redis-py client (and kombu's Redis transport options)."""
        return {
            "socket_timeout": self.redis_socket_timeout,
            "socket_connect_timeout": self.redis_connect_timeout,
            "socket_keepalive": True,
            "retry_on_timeout": False,  # the caller decides: the gateway answers 503, workers retry
        }

    @property
    def compile_cache_folder(self) -> Path:
        """COMPILE_CACHE_DIR, or MODEL_DIR/compile-cache (a volume that survives restarts)."""
        return self.compile_cache_dir or self.model_dir / "compile-cache"

    def soft_time_limit(self) -> int:
        """Seconds an attempt may run before it is asked to stop (Celery's soft limit)."""
        if self.task_soft_time_limit is not None:
            return self.task_soft_time_limit
        return self.task_time_limit - 60

    @model_validator(mode="after")
    def validate_time_limits(self) -> "Settings":
        """The soft limit must leave the attempt time to record its end before the hard kill."""
        if not 0 < self.soft_time_limit() < self.task_time_limit:
            raise ValueError("TASK_SOFT_TIME_LIMIT must be between 0 and TASK_TIME_LIMIT (seconds)")
        return self

    @model_validator(mode="after")
    def validate_secrets(self) -> "Settings":
        """In production, refuse every credential still at its development default (names the
        variable, never a value)."""
        if self.environment == "production":
            for name, default in DEV_CREDENTIALS.items():
                if getattr(self, name) == default:
                    raise ValueError(
                        f"{name.upper()} still has the development placeholder; "
                        "set the real value in the environment"
                    )
        return self


DEV_CREDENTIALS = {  # setting -> its development default, refused in production
    "secret_key": PLACEHOLDER_SECRET,
    "s3_access_key_id": DEV_S3_ACCESS_KEY,
    "s3_secret_access_key": PLACEHOLDER_SECRET,
}


@lru_cache
def get_settings() -> Settings:
    return Settings()
