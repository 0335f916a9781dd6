"""Step 4: a markdown artifact that tells a person what this run did, with links that open in a
browser."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from engine.advice import FALLBACK_MEANS, GET_VGG19, HED_LABEL, RANDOM_MEANS
from flows import storage
from flows.storage import Storage, get_storage
from flows.tasks.progress import summary_key

RANDOM_BACKBONE_WARNING = (
    "> **Warning: random backbone.** No pretrained VGG19 weights were available, so this image "
    f"was made with {RANDOM_MEANS}. To make it properly, {GET_VGG19}, then resubmit with "
    "`force=True`."
)
FALLBACK_BACKBONE_NOTE = (
    f"> **Note: trained offline fallback (`{HED_LABEL}`).** No ImageNet VGG19 weights were "
    f"available, so this image was made with {FALLBACK_MEANS}. For that look, {GET_VGG19}."
)


@task(name="publish summary", cache_policy=NO_CACHE, persist_result=False)
def publish_summary(record: dict[str, Any]) -> str:
    """Create the run's markdown artifact; returns the markdown."""
    markdown = render_summary(record, get_storage())
    create_markdown_artifact(
        markdown=markdown,
        key=summary_key(record["job_id"]),
        description=f"styledrop job {record['job_id']}: {record['status']}",
    )
    return markdown


def link(store: Storage, rel: str, label: str) -> str:
    try:
        return f"[{label}]({store.public_url(rel)})"
    except Exception:  # noqa: BLE001 - a summary without a link beats no summary
        return f"`{rel}`"


def render_summary(record: dict[str, Any], store: Storage) -> str:
    job_id = record["job_id"]
    inputs = record["inputs"]
    params = record["params"]
    headline = "reused an earlier result" if record.get("reused") else record["status"]
    lines = [f"## styledrop job `{job_id}`: {headline}", ""]
    backbone = str(record.get("backbone") or "")
    if backbone.startswith("random"):
        lines += [RANDOM_BACKBONE_WARNING, ""]
    elif backbone == HED_LABEL:
        lines += [FALLBACK_BACKBONE_NOTE, ""]
    result_url = store.public_url(storage.result_path(job_id))
    lines += [f"![result]({result_url})", ""]
    blend = params.get("style_blend")
    styles = ", ".join(
        f"`{s['requested']}`" + (f" ({blend[i]:.2f})" if blend else "")
        for i, s in enumerate(inputs["styles"])
    )
    w, h = inputs["content_size"]
    engine_s = record["timings"].get("engine_s")
    timing = (
        f"{engine_s:.1f} s for {record['steps']} steps ({record['steps_per_second']} steps/s)"
        if engine_s is not None
        else "-"
    )
    if record.get("resumed_from_step"):
        timing += f", resumed from step {record['resumed_from_step']}"
    rows = [
        ("Content", f"`{inputs['content']}` ({w}x{h})"),
        ("Style(s)", styles),
        ("Device", record.get("device") or "-"),
        ("Backbone", record.get("backbone") or "-"),
        ("Time", timing),
        (
            "Started / finished",
            f"{record['timings']['started_at']} / {record['timings'].get('finished_at') or '-'}",
        ),
        ("Result", link(store, storage.result_path(job_id), "result.png")),
        (
            "Preview",
            link(store, storage.preview_path(job_id), "preview.jpg")
            if store.exists(storage.preview_path(job_id))
            else "-",
        ),
        ("Record", link(store, storage.record_path(job_id), "record.json")),
        ("Computed by flow run", f"`{record.get('flow_run_id')}`"),
    ]
    if record.get("output"):
        rows.append(("Also written to", f"`{record['output']}`"))
    lines += ["| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "### Parameters", "", "| parameter | value |", "| --- | --- |"]
    lines += [f"| {k} | `{v}` |" for k, v in params.items()]
    return "\n".join(lines) + "\n"
