"""The run's markdown artifact: what this run did, with links that open in a browser."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from engine.advice import FALLBACK_MEANS, GET_VGG19, HED_LABEL, RANDOM_MEANS
from flows.jobs import JobRecord
from flows.layout import JobLayout
from flows.storage import Storage

RANDOM_BACKBONE_WARNING = (
    "> **Warning: random backbone.** No pretrained VGG19 weights were available, so this image "
    f"was made with {RANDOM_MEANS}. To make it properly, {GET_VGG19}, then resubmit with "
    "`force=True`."
)
FALLBACK_BACKBONE_NOTE = (
    f"> **Note: trained offline fallback (`{HED_LABEL}`).** No ImageNet VGG19 weights were "
    f"available, so this image was made with {FALLBACK_MEANS}. For that look, {GET_VGG19}."
)


def publish_summary(record: JobRecord, store: Storage) -> str:
    """Create the run's markdown artifact; returns the markdown."""
    markdown = render_summary(record, store)
    create_markdown_artifact(
        markdown=markdown,
        key=JobLayout(record.job_id).summary_key,
        description=f"styledrop job {record.job_id}: {record.status}",
    )
    return markdown


def link(store: Storage, rel: str, label: str) -> str:
    try:
        return f"[{label}]({store.public_url(rel)})"
    except Exception:  # noqa: BLE001 - a summary without a link beats no summary
        return f"`{rel}`"


def render_summary(record: JobRecord, store: Storage) -> str:
    layout = JobLayout(record.job_id)
    inputs, params = record.inputs, record.params
    headline = "reused an earlier result" if record.reused else record.status
    lines = [f"## styledrop job `{record.job_id}`: {headline}", ""]
    backbone = record.backbone or ""
    if backbone.startswith("random"):
        lines += [RANDOM_BACKBONE_WARNING, ""]
    elif backbone == HED_LABEL:
        lines += [FALLBACK_BACKBONE_NOTE, ""]
    lines += [f"![result]({store.public_url(layout.result)})", ""]
    blend = params.get("style_blend")
    styles = ", ".join(
        f"`{s.requested}`" + (f" ({blend[i]:.2f})" if blend else "")
        for i, s in enumerate(inputs.styles)
    )
    w, h = inputs.content_size
    engine_s = record.timings.engine_s
    timing = (
        f"{engine_s:.1f} s for {record.steps} steps ({record.steps_per_second} steps/s)"
        if engine_s is not None
        else "-"
    )
    if record.resumed_from_step:
        timing += f", resumed from step {record.resumed_from_step}"
    rows = [
        ("Content", f"`{inputs.content}` ({w}x{h})"),
        ("Style(s)", styles),
        ("Device", record.device or "-"),
        ("Backbone", record.backbone or "-"),
        ("Time", timing),
        (
            "Started / finished",
            f"{record.timings.started_at} / {record.timings.finished_at or '-'}",
        ),
        ("Result", link(store, layout.result, "result.png")),
        (
            "Preview",
            link(store, layout.preview, "preview.jpg") if store.exists(layout.preview) else "-",
        ),
        ("Record", link(store, layout.record, "record.json")),
        ("Computed by flow run", f"`{record.flow_run_id}`"),
    ]
    if record.output:
        rows.append(("Also written to", f"`{record.output}`"))
    lines += ["| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "### Parameters", "", "| parameter | value |", "| --- | --- |"]
    lines += [f"| {k} | `{v}` |" for k, v in params.items()]
    return "\n".join(lines) + "\n"
