"""A run's own page (`?run=<id>` on the Runs page): the photo, its style(s) and the result (or
the live preview) side by side, live progress, what was asked in words, why it failed, a link
into the Prefect UI, cancel while it runs, downloads when done."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import ui, views
from dashboard.api import Artifacts
from dashboard.store import JobFolder
from flows.deployment import RunView
from flows.gallery import UnknownStyleError, resolve_style
from flows.naming import style_name
from flows.prefect_api import ui_url


def back_to_runs() -> None:
    if st.button("← All runs", key="back"):
        st.query_params.clear()
        st.rerun()


def show_run(run_id: str) -> None:
    back_to_runs()
    run = ui.guarded(lambda: ui.api().run(run_id), "Could not load the run")
    if run is None:
        return
    st.title(run.name)
    if run.submitter:
        st.caption(f"Submitted by {run.submitter}")
    st.link_button(
        "Open in the Prefect UI ↗",
        views.prefect_run_url(ui_url(ui.settings()), run.id),
    )
    # While the run is live the status part refreshes itself; once final it is drawn once.
    refresh = None if run.is_final else ui.settings().dashboard_refresh_s
    st.fragment(run_every=refresh)(_status)(run_id, run.is_final)

    st.subheader("Parameters")
    st.markdown(
        "\n".join(
            f"- **{what}:** {value}" for what, value in views.parameters_in_words(run.parameters)
        )
    )
    with st.expander("As sent to Prefect"):
        st.json(run.parameters, expanded=True)


def _status(run_id: str, was_final: bool) -> None:
    api = ui.api()
    run = ui.guarded(lambda: api.run(run_id), "Could not refresh the run")
    if run is None:
        return
    if run.is_final and not was_final:
        # Finished since the page was drawn: redraw the whole page without the refresh timer.
        st.rerun()
    artifacts = (
        ui.guarded(lambda: api.artifacts([run.id]), "Could not read the progress") or Artifacts()
    )
    progress = artifacts.progress
    pct = views.progress_for(run, progress)

    st.markdown(
        f"**State:** {views.state_label(run, progress)}  \n**Duration:** "
        f"{views.format_duration(run.duration_s) or 'not started'}"
    )
    if pct is None and not run.is_final:
        st.progress(0.0, text="Not started: waiting for a GPU")
    elif pct is not None:
        st.progress(pct / 100, text=f"{pct:.0f}%")

    failure = views.failure_message(run)
    if failure:
        st.error(failure, icon=":material/error:")
    elif run.state_type == "CANCELLED":
        st.warning("The run was cancelled; no result was written.", icon=":material/block:")
    if not run.is_final and run.state_type != "CANCELLING":
        _cancel_button(run)

    job = ui.guarded(lambda: ui.store().job_for_run(run.id), "Could not read the job")
    result = None
    if job is not None and job.finished:
        result = ui.guarded(lambda: ui.store().read(job.layout.result), "Could not read the result")
    photo_col, style_col, result_col = st.columns(3)
    with photo_col:
        _photo(run, job)
    with style_col:
        _styles(run)
    with result_col:
        _picture(run, job, result, artifacts.previews.get(run.id))
    if job is not None:
        _job_details(job, result)


def _photo(run: RunView, job: JobFolder | None) -> None:
    """The flow's copy of the photo (it survives the original's move to archive/), or the
    upload itself before the flow has made one."""
    name = views.photo_name(run.parameters)
    store = ui.store()
    data = None
    if job is not None:
        data = ui.guarded(lambda: store.read(job.layout.input), "Could not read the photo")
    if data is None and run.parameters.get("content"):
        data = ui.guarded(
            lambda: store.read_location(str(run.parameters["content"])), "Could not read the photo"
        )
    if data:
        st.image(data, caption=f"Photo: {name}", width="stretch")
    else:
        later = "the run ended before it made one" if run.is_final else "once the run has started"
        st.caption(f"Photo: {name} (shown {later})")


def _styles(run: RunView) -> None:
    styles = [str(s) for s in run.parameters.get("styles") or []] or [ui.settings().default_style]
    blend = (run.parameters.get("options") or {}).get("style_blend")
    weights = blend if blend and len(blend) == len(styles) else [None] * len(styles)
    for style, weight in zip(styles, weights, strict=True):
        caption = f"Style: {style_name(style)}" + (f" ×{weight:g}" if weight is not None else "")
        image = _style_image(style)
        if image is not None:
            st.image(image, caption=caption, width="stretch")
        else:
            st.caption(caption)


def _style_image(style: str) -> bytes | str | None:
    """A gallery style's picture, or an uploaded style image from storage."""
    if "/" not in style and "\\" not in style:
        try:
            return str(resolve_style(style, Path(ui.settings().styles_dir)))
        except UnknownStyleError:
            return None
    return ui.guarded(lambda: ui.store().read_location(style), "Could not read the style")


def _cancel_button(run: RunView) -> None:
    if st.button("Cancel run", key="cancel", type="secondary", icon=":material/stop_circle:"):
        state = ui.guarded(lambda: ui.api().cancel(run), "Could not cancel the run")
        if state:
            st.success(f"Asked Prefect to stop the run (now {state}).")


def _picture(
    run: RunView, job: JobFolder | None, result: bytes | None, preview: str | None
) -> None:
    """The result when there is one, else the latest preview: bytes from storage, or the
    preview URL from the image artifact when the storage has nothing (yet)."""
    data, caption = result, "Result"
    if data is None and job is not None:
        caption = "Latest preview"
        data = ui.guarded(
            lambda: ui.store().read(job.layout.preview), "Could not read the preview"
        )
    if data:
        st.image(data, caption=caption, width="stretch")
        return
    if preview:
        st.image(preview, caption="Latest preview", width="stretch")
    elif not run.is_final:
        st.caption("Result: the first preview appears after a few steps.")


def _job_details(job: JobFolder, result: bytes | None) -> None:
    layout, record = job.layout, job.record
    if record is None:
        return
    if job.finished:
        cols = st.columns(2)
        if result:
            cols[0].download_button(
                "Download result (PNG)",
                data=result,
                file_name=layout.download_name("png"),
                mime="image/png",
                on_click="ignore",
                type="primary",
                icon=":material/download:",
                key="download_result",
            )
        cols[1].download_button(
            "Download job record (JSON)",
            data=record.to_json(),
            file_name=layout.download_name("json"),
            mime="application/json",
            on_click="ignore",
            icon=":material/description:",
            key="download_record",
        )
    with st.expander("Job record"):
        facts = {
            "job id": record.job_id,
            "status": record.status.value,
            "backbone": record.backbone or "not known yet",
            "device": record.device or "not known yet",
            "steps": f"{record.steps} / {record.total_steps or '?'}",
            # Text, like the other values: a table column of one type.
            "steps/s": f"{record.steps_per_second or 0:.2f}",
        }
        st.table(facts)
        st.json(record.to_dict(), expanded=False)
