"""The demo images `styledrop up` stylises on its first start: copied into the inbox once
(remembered in ``<data_dir>/.styledrop/samples-seeded``), then followed through the folder
sensor's life cycle (inbox/ -> processing/ -> archive/ + outputs/, or failed/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.images import write_atomic
from flows.sensors.convention import ERROR_SUFFIX, output_of
from flows.sensors.store import ARCHIVE, FAILED, INBOX, OUTPUTS
from flows.settings import PROJECT_ROOT

SAMPLES_DIR = PROJECT_ROOT / "samples"
SAMPLE_NAMES = ("landscape.jpg", "city.jpg")


@dataclass
class SampleOutcome:
    name: str
    done: bool
    ok: bool = False
    detail: str = ""  # the result's path, or why it failed


def marker(state_dir: Path) -> Path:
    return state_dir / "samples-seeded"


def seed_samples(data_dir: Path, state_dir: Path) -> list[str]:
    """Copy the samples into ``<data_dir>/inbox/`` unless that was done before; returns the
    names copied (empty on later starts)."""
    mark = marker(state_dir)
    if mark.exists():
        return []
    inbox = data_dir / INBOX
    inbox.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in SAMPLE_NAMES:
        source = SAMPLES_DIR / name
        if not source.is_file():
            continue
        write_atomic(inbox / name, source.read_bytes())  # the sensor never sees half a file
        copied.append(name)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text("\n".join(copied) + "\n")
    return copied


def sample_outcome(data_dir: Path, name: str) -> SampleOutcome:
    """Where a seeded sample is: the sensor archives the original only after the result is
    written, and moves it to failed/ with a ``.error.txt`` when the job failed."""
    result = data_dir / OUTPUTS / output_of(name)
    if (data_dir / ARCHIVE / name).exists() and result.exists():
        return SampleOutcome(name, done=True, ok=True, detail=str(result))
    failed = data_dir / FAILED / name
    if failed.exists():
        error = data_dir / FAILED / f"{name}{ERROR_SUFFIX}"
        reason = error.read_text(errors="replace").strip() if error.exists() else "no reason"
        return SampleOutcome(name, done=True, ok=False, detail=reason)
    return SampleOutcome(name, done=False)
