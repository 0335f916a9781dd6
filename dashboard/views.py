"""Pure helpers that turn runs, records and settings into what the pages show.

No Streamlit here, so the wording and the table rows are testable without a page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.advice import FALLBACK_MEANS, GET_VGG19, HED_LABEL, RANDOM_MEANS
from engine.params import StyleParams
from flows.deployment import RunView, plain_reason
from flows.naming import file_name, style_name

# The state filter on the Runs page: label -> Prefect state types.
STATE_FILTERS: dict[str, list[str]] = {
    "Running": ["RUNNING", "CANCELLING"],
    "Waiting": ["SCHEDULED", "PENDING", "PAUSED"],
    "Completed": ["COMPLETED"],
    "Failed": ["FAILED", "CRASHED"],
    "Cancelled": ["CANCELLED"],
}


def state_types_for(labels: list[str]) -> list[str] | None:
    """Prefect state types for the chosen filter labels; None (no filter) when none is chosen."""
    types = [t for label in labels for t in STATE_FILTERS.get(label, [])]
    return types or None


WAITING = "Waiting for a GPU"


def computing(run: RunView, progress: dict[str, float]) -> bool:
    """Has the run's job got its GPU? The flow creates the progress artifact when it has
    (flows/tasks/progress.py), whatever worker runs it; before that a Running run is still
    validating or waiting for a GPU, not running at 0%."""
    return run.id in progress


def state_label(run: RunView, progress: dict[str, float] | None = None) -> str:
    """What a person needs to know: "Waiting for a GPU" for every run not computing yet
    (queued, late, pending, or started and waiting for its slot); else Prefect's state name."""
    if run.state_type in ("SCHEDULED", "PENDING"):
        return WAITING
    if run.state_type == "RUNNING" and progress is not None and not computing(run, progress):
        return WAITING
    return run.state_name


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_time(value: datetime | None) -> str:
    """Local wall-clock time; the dashboard is a local tool, its user reads local time."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def style_names(parameters: dict[str, Any]) -> str:
    """Styles of a run as short names: gallery names as they are, paths by file stem."""
    styles = parameters.get("styles") or []
    if not styles:
        return "(default)"
    names = [style_name(str(s)) for s in styles]
    blend = (parameters.get("options") or {}).get("style_blend")
    if blend and len(blend) == len(names):
        return ", ".join(f"{n} ×{w:g}" for n, w in zip(names, blend, strict=True))
    return ", ".join(names)


def output_size(parameters: dict[str, Any]) -> str:
    size = (parameters.get("options") or {}).get("size")
    return f"{size}px" if size else "default"


def progress_for(run: RunView, progress: dict[str, float]) -> float | None:
    """Percent done: the progress artifact, or 100 for a completed run that never wrote one;
    None (no bar) for a run that has not started computing."""
    if run.state_type == "COMPLETED":
        return 100.0
    return progress.get(run.id)


def photo_name(parameters: dict[str, Any]) -> str:
    """The input photo's file name (a dashboard upload keeps its original name)."""
    content = parameters.get("content")
    return file_name(str(content)) if content else ""


def run_rows(
    runs: list[RunView],
    progress: dict[str, float],
    previews: dict[str, str],
    photos: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One plain dict per run, in the column order of the Runs table."""
    photos = photos or {}
    return [
        {
            "id": run.id,
            "photo": photos.get(run.id),
            "photo_name": photo_name(run.parameters),
            "preview": previews.get(run.id),
            "state": state_label(run, progress),
            "progress": progress_for(run, progress),
            "style": style_names(run.parameters),
            "size": output_size(run.parameters),
            "started": format_time(run.start_time or run.expected_start),
            "duration": format_duration(run.duration_s),
            "name": run.name,
        }
        for run in runs
    ]


def failure_message(run: RunView) -> str | None:
    """The reason a run did not finish, in words, or None if it did not fail."""
    if run.state_type in ("FAILED", "CRASHED"):
        message = plain_reason(run.message) or "Prefect recorded no reason."
        if run.state_type == "CRASHED":
            return f"The run crashed (the process running it died or lost contact): {message}"
        return f"The run failed: {message}"
    return None


# The Submit page's style strengths, by name; the run page says them back in these words.
STRENGTHS = {"gentle": 0.25, "light": 0.5, "normal": 1.0, "strong": 2.0, "very strong": 4.0}


def _yes_no(value: Any) -> str:
    return "yes" if value else "no"


def parameters_in_words(parameters: dict[str, Any]) -> list[tuple[str, str]]:
    """A run's parameters as (what, value) lines a person reads, not JSON with upload paths.
    Other engine options are listed by their own names when they differ from the engine's
    defaults (the Prefect UI's run form sends every field)."""
    options = dict(parameters.get("options") or {})
    lines = [
        ("Photo", photo_name(parameters) or "?"),
        ("Styles", style_names(parameters)),
    ]
    size = options.pop("size", None)
    lines.append(("Size", f"{size} px on the long edge" if size else "the engine's default"))
    if "style_weight" in options:
        weight = float(options.pop("style_weight"))
        word = next((name for name, w in STRENGTHS.items() if w == weight), None)
        lines.append(("Style strength", f"{word} (×{weight:g})" if word else f"×{weight:g}"))
    lines.append(("Keep the photo's colours", _yes_no(options.pop("preserve_colors", False))))
    iterations = options.pop("iterations", None)
    lines.append(("Iterations", str(iterations) if iterations else "the engine's default"))
    if "seed" in options:
        lines.append(("Random seed", str(options.pop("seed"))))
    options.pop("style_blend", None)  # shown with the styles
    defaults = StyleParams().to_dict()
    for key, value in sorted(options.items()):
        if key not in defaults or value != defaults[key]:
            lines.append((key.replace("_", " ").capitalize(), str(value)))
    if parameters.get("output"):
        lines.append(("Also written to", str(parameters["output"])))
    if parameters.get("force"):
        lines.append(("Recompute even if done before", "yes"))
    return lines


def prefect_run_url(ui_url: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/runs/flow-run/{run_id}"


def uses_random_backbone(setting: str, latest_backbone: str | None) -> bool:
    """True when pictures come (or will come) from the random, untrained backbone."""
    return setting == "random" or bool(latest_backbone and latest_backbone.startswith("random"))


def uses_fallback_backbone(setting: str, latest_backbone: str | None) -> bool:
    """True when the latest pictures came from the trained offline fallback, not VGG19."""
    return HED_LABEL in (setting, latest_backbone)


FALLBACK_BACKBONE_BANNER = (
    f"**Trained offline fallback (`{HED_LABEL}`).** No ImageNet VGG19 weights were available, "
    f"so pictures are made with {FALLBACK_MEANS}. For that look, {GET_VGG19}."
)

RANDOM_BACKBONE_BANNER = (
    "**Random backbone: the pictures are not meaningful art.** They are made with "
    f"{RANDOM_MEANS}. For real style transfer, {GET_VGG19} (or let it download once with "
    "network), and use `STYLEDROP_BACKBONE=auto`."
)
