"""Print the README's settings table from the Settings model, so docs and code cannot drift.

tests/test_readme.py checks that README.md contains exactly this table; after changing a
setting, run `.venv/bin/python scripts/settings_table.py` and paste its output.
"""

from __future__ import annotations

import json
from pathlib import Path

from flows.settings import PROJECT_ROOT, Settings


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if value is None or str(value) == "":  # str(): an empty SecretStr too
        return "(empty)"
    if isinstance(value, Path):
        # Show the checkout-relative form, not this machine's absolute path.
        try:
            return str(value.relative_to(PROJECT_ROOT)) + "/ (of the checkout)"
        except ValueError:
            return str(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        desc = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `STYLEDROP_{name.upper()}` | `{_default(name)}` | {desc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
