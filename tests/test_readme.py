"""The README documents every setting with its current default, and the fresh-machine commands
it gives are the ones CI runs."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _settings_table() -> str:
    path = ROOT / "scripts/settings_table.py"
    spec = importlib.util.spec_from_file_location("settings_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.settings_table()


def test_readme_has_the_settings_table_of_the_code():
    readme = (ROOT / "README.md").read_text()
    table = _settings_table()
    assert table in readme, (
        "README's settings table is out of date: paste the output of "
        "`.venv/bin/python scripts/settings_table.py`"
    )


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./test.sh" in readme
    ci = (ROOT / ".ci/run").read_text()
    assert "./test.sh" in ci
    # ./test.sh leaves out the long tests; CI runs them after it, so CI runs every test.
    assert '-m "not long"' in (ROOT / "test.sh").read_text()
    assert "-m long" in ci
    assert "./install.sh && .venv/bin/styledrop up" in readme
