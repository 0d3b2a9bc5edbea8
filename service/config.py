"""All service settings, read from the environment in one place.

Every knob the service has is a field here with its environment variable and default; nothing else in
``service/`` reads ``os.environ``. The README's settings table is generated from the same field list
(``python -m service.config``), so documentation and code cannot drift apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    raw = _env(name, "1" if default else "0").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _list(name: str, default: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _env(name, default).split(",") if item.strip())


def _setting(env: str, doc: str, default_factory):
    """A dataclass field that remembers its environment variable and documentation."""
    return field(default_factory=default_factory, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    model_repository: Path = _setting(
        "MODEL_REPOSITORY", "Folder of models: <name>/<version>/model.onnx + model.json.",
        lambda: Path(_env("MODEL_REPOSITORY", str(_PROJECT_ROOT / "models"))),
    )
    default_model: str = _setting(
        "DEFAULT_MODEL", "Model that POST /predict and the web page use.",
        lambda: _env("DEFAULT_MODEL", "mnist"),
    )
    version_policy: str = _setting(
        "VERSION_POLICY",
        "Which versions to serve: 'latest', 'latest:N' or 'specific:V1,V2'. A model's own "
        "serving.json (written by promote/rollback) overrides it.",
        lambda: _env("VERSION_POLICY", "latest"),
    )
    poll_interval_s: float = _setting(
        "POLL_INTERVAL_S", "Seconds between scans of the repository for new, changed or removed versions "
        "(0 turns polling off).",
        lambda: _float("POLL_INTERVAL_S", 2.0),
    )
    providers: tuple[str, ...] = _setting(
        "ORT_PROVIDERS", "onnxruntime providers: 'auto' (CUDA if available, else CPU) or a comma list.",
        lambda: _list("ORT_PROVIDERS", "auto"),
    )
    intra_op_threads: int = _setting(
        "ORT_THREADS", "onnxruntime intra-op threads per worker (0 = cores / workers).",
        lambda: _int("ORT_THREADS", 0),
    )
    max_batch_items: int = _setting(
        "MAX_BATCH_ITEMS", "Most items (images or instances) one request may carry.",
        lambda: _int("MAX_BATCH_ITEMS", 4096),
    )
    max_content_length: int = _setting(
        "MAX_CONTENT_LENGTH", "Largest request body in bytes; larger ones get 413 before being read.",
        lambda: _int("MAX_CONTENT_LENGTH", 32 * 1024 * 1024),
    )
    max_image_pixels: int = _setting(
        "MAX_IMAGE_PIXELS", "Largest image (width x height) accepted; checked from the header before "
        "decoding.",
        lambda: _int("MAX_IMAGE_PIXELS", 4096 * 4096),
    )
    max_read_digits: int = _setting(
        "MAX_READ_DIGITS", "Most digits (pieces of ink) POST /read finds in one picture; more get 422.",
        lambda: _int("MAX_READ_DIGITS", 32),
    )
    max_request_pixels: int = _setting(
        "MAX_REQUEST_PIXELS", "Most pixels (width x height, summed over its images) one request may "
        "decode; checked from the headers before decoding. Bounds a request's decode time (~0.1 s per "
        "16 Mpx) however many small files declare huge images.",
        lambda: _int("MAX_REQUEST_PIXELS", 4 * 4096 * 4096),
    )
    max_model_bytes: int = _setting(
        "MAX_MODEL_BYTES", "Largest model.onnx loaded; a bigger file is refused (shown in the model's "
        "status) without being read. Reading and hashing run beside the event loop, but onnxruntime "
        "holds the GIL for part of building a session, so this also bounds how long a hot reload stalls "
        "a gevent worker's answers (a real 62 MiB model: liveness 158 ms at worst while it loaded in "
        "1.1 s; our 0.1 MiB model: nothing measurable; bench/bounds.py --reload).",
        lambda: _int("MAX_MODEL_BYTES", 64 * 1024 * 1024),
    )
    default_top_k: int = _setting(
        "DEFAULT_TOP_K", "How many classes each prediction lists in top_k unless the query says.",
        lambda: _int("DEFAULT_TOP_K", 3),
    )
    batch_max_size: int = _setting(
        "BATCH_MAX_SIZE", "Dynamic batching across concurrent requests: most items in one run "
        "(1 = off).",
        lambda: _int("BATCH_MAX_SIZE", 1),
    )
    batch_max_delay_ms: float = _setting(
        "BATCH_MAX_DELAY_MS", "Dynamic batching: longest a request waits for others to join it.",
        lambda: _float("BATCH_MAX_DELAY_MS", 2.0),
    )
    admin_token: str = _setting(
        "ADMIN_TOKEN", "Bearer token for the repository admin API; empty turns the admin API off (403).",
        lambda: _env("ADMIN_TOKEN", ""),
    )
    cors_origins: tuple[str, ...] = _setting(
        "CORS_ORIGINS", "Origins allowed to call the API from a browser (comma list, '*' for any); "
        "empty = CORS off.",
        lambda: _list("CORS_ORIGINS", ""),
    )
    feedback_dir: str = _setting(
        "FEEDBACK_DIR", "Where POST /v1/models/<name>/feedback stores users' labelled pictures "
        "(<model>/<label>/<sha256>.<ext> + feedback.jsonl); empty turns feedback off (404).",
        lambda: _env("FEEDBACK_DIR", ""),
    )
    feedback_max_bytes: int = _setting(
        "FEEDBACK_MAX_BYTES", "Quota for the whole feedback store in bytes; when full, feedback gets 507.",
        lambda: _int("FEEDBACK_MAX_BYTES", 1024 * 1024 * 1024),
    )
    feedback_token: str = _setting(
        "FEEDBACK_TOKEN", "Bearer token required to send feedback; empty = anyone who can reach the page.",
        lambda: _env("FEEDBACK_TOKEN", ""),
    )
    log_level: str = _setting(
        "LOG_LEVEL", "Log level: DEBUG, INFO, WARNING, ERROR.",
        lambda: _env("LOG_LEVEL", "INFO").upper(),
    )
    runtime_dir: str = _setting(
        "RUNTIME_DIR", "Scratch folder the gunicorn workers share (metrics, admin state); the master "
        "makes a fresh one under /tmp when empty. Must be writable (a tmpfs in a read-only container).",
        lambda: _env("RUNTIME_DIR", ""),
    )
    workers: int = _setting(
        "WORKERS", "gunicorn worker processes (0 = the cores this process may use: CPU affinity, cgroup quota).",
        lambda: _int("WORKERS", 0),
    )
    worker_class: str = _setting(
        "WORKER_CLASS", "gunicorn worker type: gevent (default: best throughput here, and slow clients "
        "cannot pin a worker), gthread (uses THREADS) or sync. See bench/RESULTS.md.",
        lambda: _env("WORKER_CLASS", "gevent"),
    )
    threads: int = _setting(
        "THREADS", "Threads per gunicorn worker (gthread).",
        lambda: _int("THREADS", 1),
    )
    worker_connections: int = _setting(
        "WORKER_CONNECTIONS", "gevent workers: most connections one worker holds open (idle keep-alive, "
        "uploading, waiting, in progress); past it the worker stops accepting. 0 = derived: a quarter of "
        "the worker's share of the memory limit at 64 KiB a connection, within 1,000-10,000 and the "
        "open-files limit. Enough that a crowd of stalled uploads (dropped after BODY_TIMEOUT_S) leaves "
        "room for health probes and real clients.",
        lambda: _int("WORKER_CONNECTIONS", 0),
    )
    worker_requests_in_progress: int = _setting(
        "WORKER_REQUESTS_IN_PROGRESS", "gevent workers: most requests one worker works on at once (body "
        "read, being answered); later ones wait in arrival order, up to ADMISSION_WAIT_S, then get 503 "
        "with Retry-After. 0 = derived: a quarter of the worker's share of the memory limit at 16 MiB a "
        "request, within max(4, BATCH_MAX_SIZE)-64. Health checks never wait.",
        lambda: _int("WORKER_REQUESTS_IN_PROGRESS", 0),
    )
    worker_body_bytes: int = _setting(
        "WORKER_BODY_BYTES", "gevent workers: most bytes of request bodies one worker holds at once "
        "(declared Content-Length, or MAX_CONTENT_LENGTH for a chunked body, reserved before reading); "
        "later bodies wait in arrival order, up to ADMISSION_WAIT_S, then get 503 with Retry-After. "
        "0 = derived: a quarter of the worker's share of the memory limit, within 1-8 x "
        "MAX_CONTENT_LENGTH.",
        lambda: _int("WORKER_BODY_BYTES", 0),
    )
    admission_wait_s: float = _setting(
        "ADMISSION_WAIT_S", "gevent workers: longest a request waits for its turn (WORKER_BODY_BYTES, "
        "WORKER_REQUESTS_IN_PROGRESS) before it gets 503 with Retry-After.",
        lambda: _float("ADMISSION_WAIT_S", 5.0),
    )
    body_timeout_s: float = _setting(
        "BODY_TIMEOUT_S", "A request body must arrive whole within this many seconds of its turn to be "
        "read, or the upload is answered 408 and its connection closed (a stalled or trickled upload "
        "cannot hold memory, a connection or a thread for longer). All worker types; a sync worker is "
        "also killed by gunicorn's 30 s worker timeout, so keep this below it.",
        lambda: _float("BODY_TIMEOUT_S", 30.0),
    )
    listen_backlog: int = _setting(
        "LISTEN_BACKLOG", "Connections the kernel queues for the workers to accept (listen() backlog). "
        "0 = derived: what the workers can hold (WORKERS x WORKER_CONNECTIONS), within 2,048 and the "
        "kernel's net.core.somaxconn, which caps any value. A connection that finds the queue full has "
        "its SYN dropped and is retried a second or more later: gunicorn's 2,048 let a crowd of 2,500 "
        "stalled uploads delay a liveness probe by 1.4 s.",
        lambda: _int("LISTEN_BACKLOG", 0),
    )
    host: str = _setting("HOST", "Address gunicorn binds to.", lambda: _env("HOST", "0.0.0.0"))
    port: int = _setting("PORT", "Port gunicorn binds to.", lambda: _int("PORT", 8000))
    grpc_port: int = _setting(
        "GRPC_PORT", "Port for the Open Inference Protocol over gRPC (KServe V2, Triton clients), on HOST, "
        "served by every worker (SO_REUSEPORT); empty or 0 = no gRPC. Messages are limited to MAX_CONTENT_LENGTH.",
        lambda: _int("GRPC_PORT", 0),
    )

    def ort_threads(self) -> int:
        """Threads per onnxruntime session, so that workers x threads never oversubscribes the cores."""
        if self.intra_op_threads > 0:
            return self.intra_op_threads
        return max(1, available_cpus() // max(1, self.worker_count()))

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else available_cpus()

    def worker_memory_share(self) -> int:
        """Bytes of the memory limit (container, else physical) that fall to one worker."""
        return memory_limit() // max(1, self.worker_count())

    def worker_connection_limit(self) -> int:
        if self.worker_connections > 0:
            return self.worker_connections
        derived = min(max(self.worker_memory_share() // 4 // (64 * 1024), 1000), 10_000)
        return max(100, min(derived, open_files_limit() - 100))

    def listen_backlog_limit(self) -> int:
        if self.listen_backlog > 0:
            return self.listen_backlog
        held = self.worker_count() * self.worker_connection_limit()
        return max(2048, min(held, somaxconn()))

    def worker_request_limit(self) -> int:
        if self.worker_requests_in_progress > 0:
            return self.worker_requests_in_progress
        floor = max(4, self.batch_max_size)
        return max(floor, min(self.worker_memory_share() // 4 // (16 * 1024 * 1024), 64))

    def worker_body_limit(self) -> int:
        if self.worker_body_bytes > 0:
            return self.worker_body_bytes
        one = self.max_content_length + 1  # a chunked body is read up to the limit + 1 byte
        return min(max(self.worker_memory_share() // 4, one), 8 * one)


def available_cpus() -> int:
    """Cores this process may really use: the CPU affinity mask, capped by a cgroup v2 quota.

    ``os.cpu_count()`` reports the host's cores, so a container limited to 2 CPUs on a 64-core node
    would otherwise start 64 workers.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def memory_limit() -> int:
    """Bytes this process may use: the cgroup memory limit (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``) when there is one, capped by the machine's physical memory.

    The per-worker budgets are derived from it, so that a pod with a 1 GiB limit does not budget for
    the node's 64 GiB.
    """
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit():  # "max" (v2) means no limit; v1 says "no limit" with a huge number
            return min(int(raw), physical)
    return physical


def somaxconn() -> int:
    """The kernel's cap on a listening socket's backlog (Linux ``net.core.somaxconn``; 4096 since 5.4)."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        return 4096


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE: every connection costs a descriptor."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def load_settings() -> Settings:
    """Read the environment now (each call sees the current environment)."""
    return Settings()


def settings_table() -> str:
    """Markdown table of every setting, for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    defaults = Settings()
    for f in fields(Settings):
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            value = ",".join(value)
        if f.name == "model_repository":
            value = "models/ (in the checkout)"
        rows.append(f"| `{f.metadata['env']}` | `{value}` | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
