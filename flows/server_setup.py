"""What styledrop puts on a Prefect server, all in one place: the work pool of styledrop's
worker type, the `stylize/stylize` deployment (deployments/prefect.yaml), the lost-run
automation (what it watches: flows/alive.py) and the alert automations with their
notification block (deployments/alert-*.yaml).

Every step is idempotent: it creates what is missing. With ``update`` (the administrator's
`styledrop worker --setup-only`) it also makes what exists match this checkout and these
settings. Workers do not update: machines with different settings would overwrite each
other's windows at every start. What the checkout alone decides - the deployment's entrypoint,
description and parameter schema (the Prefect UI's run form) - every start brings up to date.

Alerts: both send through the block `styledrop-alerts` (Prefect's Custom Webhook block), a JSON
POST of `subject`, `body` and `text` to STYLEDROP_ALERT_WEBHOOK_URL, kept in the block's secret
values, never in the automation or a log. With the URL empty there are no alerts, and the
set-up removes ours if an earlier one made them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from string import Template
from typing import Any

import yaml

from flows.settings import PROJECT_ROOT, Settings

DEPLOYMENT_FILE = PROJECT_ROOT / "deployments" / "prefect.yaml"
ALERT_FILES = (
    PROJECT_ROOT / "deployments" / "alert-failing-runs.yaml",
    PROJECT_ROOT / "deployments" / "alert-backlog.yaml",
)
BLOCK_NAME = "styledrop-alerts"


def set_up(settings: Settings, *, pool: str | None, update: bool, alerts: bool) -> Iterator[str]:
    """The pool ``pool`` and the deployment on it (none: skipped), the lost-run automation and,
    with ``alerts``, the alerts as the settings say. Yields what was done, for the log."""
    if pool is not None:
        yield ensure_pool(pool)
        yield ensure_deployment(pool, update=update)
    yield ensure_lost_run_automation(settings, update=update)
    if alerts:
        yield set_up_alerts(settings)


def client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def upsert_automation(spec: Any, *, update: bool) -> tuple[str, Any]:
    """Create the automation ``spec`` (an ``AutomationCore``) when none has its name; with
    ``update``, make the existing one match it and delete copies (`prefect automation create`
    makes a second one). Returns what was done ("created", "updated" or "exists") and the
    automation as it now is on the server."""
    with client() as api:
        existing = api.read_automations_by_name(spec.name)
        if not existing:
            api.create_automation(spec)
            return "created", spec
        if not update:
            return "exists", existing[0]
        api.update_automation(existing[0].id, spec)
        for extra in existing[1:]:
            api.delete_automation(extra.id)
    return "updated", spec


def ensure_pool(pool: str) -> str:
    """The work pool ``pool`` of styledrop's worker type, as `prefect work-pool create --type
    styledrop` makes it (the type is known to Prefect through the `prefect.collections` entry
    point in pyproject.toml)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from flows.worker import StyledropWorker

    template = StyledropWorker.get_default_base_job_template()
    with client() as api:
        try:
            api.create_work_pool(
                WorkPoolCreate(name=pool, type=StyledropWorker.type, base_job_template=template)
            )
        except ObjectAlreadyExists:
            return f"work pool {pool!r} exists"
    return f"created work pool {pool!r}"


def deployment_spec(path: Path = DEPLOYMENT_FILE) -> dict[str, Any]:
    """The `stylize` deployment as deployments/prefect.yaml defines it."""
    (spec,) = yaml.safe_load(path.read_text())["deployments"]
    return spec


def ensure_deployment(pool: str, *, update: bool) -> str:
    """Register `stylize/stylize` on ``pool`` from deployments/prefect.yaml when it is
    missing or on no pool (served, or made by hand); with ``update``: always. Without
    ``update``, an existing one whose run form (parameter schema), entrypoint or description
    differs from this checkout's gets this checkout's; its pool, queue and tags are left as
    the administrator set them."""
    from prefect.exceptions import ObjectNotFound

    from flows.stylize import stylize

    spec = deployment_spec()
    full_name = f"{stylize.name}/{spec['name']}"
    wanted = checkout_deployment(spec)
    with client() as api:
        try:
            existing = api.read_deployment_by_name(full_name)
        except ObjectNotFound:
            existing = None
        if existing is not None and not update and existing.work_pool_name:
            done = refresh_deployment(api, existing, wanted)
            if existing.work_pool_name != pool:
                return (
                    f"deployment {full_name} {done} on work pool {existing.work_pool_name!r}, "
                    f"not {pool!r}: its runs go there (`--setup-only` moves it)"
                )
            return f"deployment {full_name} {done}"
        api.create_deployment(  # an upsert by flow and name
            flow_id=api.create_flow_from_name(stylize.name),
            name=spec["name"],
            path=str(PROJECT_ROOT),
            work_pool_name=pool,
            work_queue_name=spec["work_pool"].get("work_queue_name"),
            job_variables=spec["work_pool"].get("job_variables") or {},
            tags=spec.get("tags") or [],
            **wanted,
        )
    return f"{'updated' if existing else 'created'} deployment {full_name} on pool {pool!r}"


def checkout_deployment(spec: dict[str, Any]) -> dict[str, Any]:
    """What this checkout says the deployment is, beyond where its runs go."""
    from prefect.utilities.callables import parameter_schema

    from flows.stylize import stylize

    return {
        "entrypoint": spec["entrypoint"],
        "description": spec.get("description"),
        "enforce_parameter_schema": spec.get("enforce_parameter_schema", True),
        "parameter_openapi_schema": parameter_schema(stylize).model_dump_for_openapi(),
    }


def refresh_deployment(api: Any, existing: Any, wanted: dict[str, Any]) -> str:
    """Give ``existing`` the fields of ``wanted`` that differ (one request, none if all
    match); says what was done."""
    from prefect.client.schemas.actions import DeploymentUpdate

    stale = {k: v for k, v in wanted.items() if _as_json(getattr(existing, k)) != _as_json(v)}
    if not stale:
        return "exists"
    api.update_deployment(existing.id, DeploymentUpdate(**stale))
    return f"exists; updated its {', '.join(stale)} to this checkout's"


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def ensure_lost_run_automation(settings: Settings, *, update: bool) -> str:
    from flows.alive import lost_run_automation

    done, automation = upsert_automation(lost_run_automation(settings), update=update)
    within = automation.trigger.within
    seconds = within.total_seconds() if isinstance(within, timedelta) else within
    return f"automation {automation.name!r} {done} (lost after {seconds:.0f} s)"


# --- alerts -------------------------------------------------------------------------------------


def alert_specs(settings: Settings, block_id: Any, files: tuple[Path, ...] = ALERT_FILES) -> list:
    """The alert automations as `AutomationCore`s, sized by the settings and sending through
    the block ``block_id``."""
    from prefect.events.schemas.automations import AutomationCore

    windows = {
        "styledrop-alert-failing-runs": (settings.alert_failures, settings.alert_failure_window_s),
        "styledrop-alert-backlog": (1, settings.alert_wait_s),
    }
    specs = []
    for path in files:
        data = yaml.safe_load(path.read_text())
        threshold, within = windows[data["name"]]
        data["trigger"]["threshold"] = threshold
        data["trigger"]["within"] = within
        for action in data["actions"]:
            action["block_document_id"] = str(block_id)
            for key in ("subject", "body"):
                action[key] = Template(action[key]).safe_substitute(
                    threshold=threshold, within=within
                )
        specs.append(AutomationCore.model_validate(data))
    return specs


def alert_names(files: tuple[Path, ...] = ALERT_FILES) -> list[str]:
    return [yaml.safe_load(path.read_text())["name"] for path in files]


def save_block(url: str) -> Any:
    """Create or update the notification block; returns its document id."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="styledrop",
        # The real URL lives in the block's secrets, shown masked in the Prefect UI.
        url="{{webhook_url}}",
        secrets={"webhook_url": url},
        json_data={"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}: {{body}}"},
    )
    return block.save(BLOCK_NAME, overwrite=True)


def set_up_alerts(settings: Settings) -> str:
    """Make the alert automations and their block match the settings (always updated: only
    the administrator's steps, `up` and `worker --setup-only`, set them up)."""
    url = settings.alert_webhook_url.get_secret_value()
    if not url:
        with client() as api:
            earlier = [a for name in alert_names() for a in api.read_automations_by_name(name)]
            for automation in earlier:
                api.delete_automation(automation.id)
        gone = f"; removed {len(earlier)} earlier alert automation(s)" if earlier else ""
        return f"alerts off (STYLEDROP_ALERT_WEBHOOK_URL is empty){gone}"
    done = [
        f"{upsert_automation(spec, update=True)[0]} {spec.name!r}"
        for spec in alert_specs(settings, save_block(url))
    ]
    return f"alerts: {', '.join(done)} (notifications through the block {BLOCK_NAME!r})"
