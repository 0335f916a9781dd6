"""Results: the gallery of finished results, newest first, each with its downloads."""

from __future__ import annotations

import io
from collections.abc import Callable

import streamlit as st

from dashboard import ui, views
from dashboard.store import DashboardStore, JobFolder
from flows.jobs import JobRecord

GRID_COLUMNS = 3
RESULTS_SHOWN = 30
THUMB_PX = 320


@st.cache_data(max_entries=200, show_spinner=False)
def thumbnail(storage_root: str, rel: str, version: str) -> bytes | None:
    """A small JPEG of a result; `version` (its modification time) keys the cache."""
    from PIL import Image

    data = DashboardStore(settings=ui.settings()).read(rel)
    if data is None:
        return None
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMB_PX, THUMB_PX))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def reader(store: DashboardStore, rel: str) -> Callable[[], bytes]:
    # Read on click (Streamlit runs the callable then), so the page does not hold every result.
    return lambda: store.read(rel) or b""


def caption(record: JobRecord) -> str:
    styles = [s.requested for s in record.inputs.styles]
    params = record.params
    when = record.timings.finished_at or ""
    names = views.style_names({"styles": styles, "options": params})
    size = f"{params['size']}px" if params.get("size") else "default size"
    return f"{names} · {size} · {when.replace('T', ' ')[:16]}"


def result_card(store: DashboardStore, job: JobFolder) -> None:
    layout, record = job.layout, job.record
    assert record is not None  # the page shows finished jobs only
    thumb = ui.guarded(
        lambda: thumbnail(store.root, layout.result, str(job.modified)),
        f"Could not read the result of job {layout.job_id}",
    )
    if thumb:
        st.image(thumb, width="stretch")
    st.caption(caption(record))
    st.download_button(
        "Result",
        data=reader(store, layout.result),
        file_name=layout.download_name("png"),
        mime="image/png",
        on_click="ignore",
        icon=":material/download:",
        key=f"result_{layout.job_id}",
    )
    st.download_button(
        "Record",
        data=record.to_json(),
        file_name=layout.download_name("json"),
        mime="application/json",
        on_click="ignore",
        icon=":material/description:",
        key=f"record_{layout.job_id}",
    )


st.title("Results")
store = ui.store()
jobs = ui.guarded(lambda: store.jobs(limit=RESULTS_SHOWN * 2), "Could not list the results")
finished = [j for j in jobs or [] if j.finished][:RESULTS_SHOWN]
if jobs is not None and not finished:
    st.info(
        "No finished results yet. Submit a picture on the **Submit** page.", icon=":material/info:"
    )
# Responsive: three across on a desktop, two on a phone.
grid = st.grid(GRID_COLUMNS, min_column_width=150)
for job in finished:
    with grid.cell():
        result_card(store, job)
