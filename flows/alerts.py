"""Alerts on Prefect's own machinery: automations that watch the `stylize` flow's events and
send a notification through a Prefect notification block when something needs a person.

- `deployments/alert-failing-runs.yaml`: runs fail repeatedly (STYLEDROP_ALERT_FAILURES
  failed or crashed runs within STYLEDROP_ALERT_FAILURE_WINDOW_S);
- `deployments/alert-backlog.yaml`: a run has waited STYLEDROP_ALERT_WAIT_S without starting.

Both send through the block `styledrop-alerts` (Prefect's Custom Webhook block): a JSON POST
of `subject`, `body` and `text` to STYLEDROP_ALERT_WEBHOOK_URL, kept in the block's secret
values, never in the automation or a log. With the URL empty there are no alerts, and the
setup removes ours if an earlier one made them.

`setup_alerts` is idempotent, like the lost-run automation's setup (flows/scaleout.py), and is
called by `styledrop up` and `styledrop worker --setup-only`.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

import yaml

from flows.settings import PROJECT_ROOT, Settings

ALERT_FILES = (
    PROJECT_ROOT / "deployments" / "alert-failing-runs.yaml",
    PROJECT_ROOT / "deployments" / "alert-backlog.yaml",
)
BLOCK_NAME = "styledrop-alerts"


def alert_specs(settings: Settings, block_id: Any, files: tuple[Path, ...] = ALERT_FILES) -> list:
    """The alert automations as `AutomationCore`s, sized by the settings and sending through
    the block `block_id`."""
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


def setup_alerts(settings: Settings) -> str:
    """Make the alert automations and their block match the settings (an administrator's
    step, like `worker --setup-only`: workers do not call it, so machines with other settings
    never overwrite each other). Returns what was done, for the log."""
    from prefect.client.orchestration import get_client

    url = settings.alert_webhook_url.get_secret_value()
    with get_client(sync_client=True) as client:
        if not url:
            removed = 0
            for name in alert_names():
                for existing in client.read_automations_by_name(name):
                    client.delete_automation(existing.id)
                    removed += 1
            gone = f"; removed {removed} earlier alert automation(s)" if removed else ""
            return f"alerts off (STYLEDROP_ALERT_WEBHOOK_URL is empty){gone}"
        block_id = save_block(url)
        done = []
        for spec in alert_specs(settings, block_id):
            existing = client.read_automations_by_name(spec.name)
            if not existing:
                client.create_automation(spec)
                done.append(f"created {spec.name!r}")
                continue
            client.update_automation(existing[0].id, spec)
            for extra in existing[1:]:  # copies made by hand with `prefect automation create`
                client.delete_automation(extra.id)
            done.append(f"updated {spec.name!r}")
    return f"alerts: {', '.join(done)} (notifications through the block {BLOCK_NAME!r})"
