"""Runs: the recent runs of the stylize deployment, refreshing by itself; `?run=<id>` shows one."""

from __future__ import annotations

import streamlit as st

from dashboard import ui, views
from dashboard.api import Artifacts, Refusal
from dashboard.run_detail import show_run
from flows.deployment import RunView

RUNS_SHOWN = 50
REFUSALS_SHOWN = 10


def refusals_list(refusals: list[Refusal]) -> None:
    st.markdown(
        f"**Refused before a run** ({len(refusals)}): each file is in `failed/` with a note "
        "saying why."
    )
    st.dataframe(
        [
            {"when": views.format_time(r.when), "file": r.path, "reason": r.reason}
            for r in refusals
        ],
        hide_index=True,
        column_config={
            "when": st.column_config.TextColumn("When"),
            "file": st.column_config.TextColumn("File"),
            "reason": st.column_config.TextColumn("Reason", width="large"),
        },
    )


def runs_table(state_types: list[str] | None) -> None:
    api = ui.api()
    # Refused files are failures too: shown unless the filter leaves failures out.
    with_refusals = state_types is None or "FAILED" in state_types

    def load() -> tuple[list[RunView], Artifacts, list[Refusal]]:
        runs = api.runs(state_types, limit=RUNS_SHOWN)
        refusals = api.refusals(limit=REFUSALS_SHOWN) if with_refusals else []
        return runs, api.artifacts([r.id for r in runs]), refusals

    loaded = ui.guarded(load, "Could not load the runs")
    if loaded is None:
        return
    runs, artifacts, refusals = loaded
    if runs:
        runs_grid(runs, artifacts)
    else:
        st.info("No runs yet. Submit a picture on the **Submit** page.", icon=":material/info:")
    if refusals:
        refusals_list(refusals)


def runs_grid(runs: list[RunView], artifacts: Artifacts) -> None:
    rows = views.run_rows(runs, artifacts.progress, artifacts.previews, artifacts.photos)
    # A new key after each visit to a run page, so coming back does not reopen the run the
    # table still has selected.
    key = f"runs_table_{st.session_state.get('runs_table_nonce', 0)}"
    event = st.dataframe(
        rows,
        key=key,
        hide_index=True,
        placeholder="",  # no preview yet: an empty cell, not "None"
        on_select="rerun",
        selection_mode="single-row",
        column_order=[
            "photo",
            "photo_name",
            "state",
            "progress",
            "preview",
            "style",
            "size",
            "started",
            "duration",
        ],
        column_config={
            "photo": st.column_config.ImageColumn("", width="small"),
            "photo_name": st.column_config.TextColumn("Photo"),
            "preview": st.column_config.ImageColumn("Preview", width="small"),
            "state": st.column_config.TextColumn("State"),
            "progress": st.column_config.ProgressColumn(
                "Progress", min_value=0, max_value=100, format="%.0f%%"
            ),
            "style": st.column_config.TextColumn("Style"),
            "size": st.column_config.TextColumn("Size"),
            "started": st.column_config.TextColumn("Started"),
            "duration": st.column_config.TextColumn("Duration"),
        },
        row_height=56,
        # Every run shown, the page scrolls: "auto" fits ten rows of the default height only.
        height="content",
    )
    st.caption(
        f"Select a row to open the run. Refreshes every {ui.settings().dashboard_refresh_s:g} s."
    )
    selected = event.selection.rows if event is not None else []
    if selected:
        st.session_state["runs_table_nonce"] = st.session_state.get("runs_table_nonce", 0) + 1
        st.query_params["run"] = rows[selected[0]]["id"]
        st.rerun()


run_id = st.query_params.get("run")
if run_id:
    show_run(run_id)
else:
    st.title("Runs")
    chosen = st.pills("Show", list(views.STATE_FILTERS), selection_mode="multi", key="state_filter")
    st.fragment(run_every=ui.settings().dashboard_refresh_s)(runs_table)(
        views.state_types_for(chosen or [])
    )
