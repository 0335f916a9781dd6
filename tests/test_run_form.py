"""The `stylize/stylize` deployment's run form in the Prefect UI (issue 20): the flow's typed
parameters make the form - labelled fields with descriptions, defaults, bounds and choices,
the gallery's styles among them - and a person can start a run from it.

Fast: the schema the form is made from, and the job id whatever way the options come. Slow,
on a Prefect server of its own WITH its UI and a `styledrop worker` (random backbone, tiny
sizes): the worker gives a deployment registered by an older checkout this checkout's form; in
headless Chromium the form is filled and submitted (screenshot: test-artifacts/run-form.png)
and the run has the typed parameters and completes; the server does not enforce the schema,
so bad options from the API end as a Failed run that says why in plain words.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ARTIFACTS,
    ROOT,
    PrefectServer,
    free_port,
    make_image,
    start_prefect_server,
    stop_process,
    wait_until,
)
from prefect.utilities.callables import parameter_schema

from flows.checks import check_job
from flows.gallery import list_styles
from flows.options import StyleOptions, parse_options, style_choice
from flows.settings import Settings
from flows.stylize import stylize

DEPLOYMENT = "stylize/stylize"
POOL = Settings().work_pool


def form_schema() -> dict[str, Any]:
    return parameter_schema(stylize).model_dump_for_openapi()


# --- the schema (fast) --------------------------------------------------------------------------


def test_every_parameter_is_described_and_options_open_as_fields() -> None:
    schema = form_schema()
    params = schema["properties"]
    assert list(params) == ["content", "styles", "options", "output", "force", "content_name"]
    assert schema["required"] == ["content"]
    for name, param in params.items():
        assert len(param.get("description", "")) > 20, name  # from the docstring's Args
    # Defaults that open the form on a list and on the options' own fields (not on "None").
    assert params["styles"]["default"] == []
    assert params["options"]["default"]["optimizer"] == "adam"
    fields = schema["definitions"]["StyleOptions"]["properties"]
    # "Empty: the default" fields are plain inputs with their bounds, not a type picker.
    assert fields["size"] == {
        "title": "Size (px)",
        "type": "integer",
        "minimum": 16,
        "maximum": 8192,
        "description": fields["size"]["description"],
    }
    assert fields["style_blend"]["items"] == {"type": "number", "minimum": 0}
    assert fields["optimizer"]["enum"] == ["adam", "lbfgs"]
    assert fields["style_scale"]["minimum"] == 0.05 and fields["style_scale"]["default"] == 1.0


def test_styles_offer_the_gallery_and_take_any_path_or_url() -> None:
    items = form_schema()["properties"]["styles"]["anyOf"][0]["items"]["anyOf"]
    gallery = [s.name for s in list_styles(Settings().styles_dir)]
    assert gallery and items == [
        {"title": "Gallery style", "type": "string", "enum": gallery},
        {"title": "Path or URL", "type": "string"},
    ]
    assert style_choice([]) is str  # no gallery: any text


def test_the_same_effective_options_are_the_same_job(tmp_path: Path) -> None:
    """Nothing, {}, the model, or every field as the form sends it (numbers as JSON integers):
    one job id, so a run from the form reuses the API's result and back."""
    settings = Settings(styles_dir=tmp_path)
    content = str(make_image(tmp_path / "c.png", (48, 40)))
    style = str(make_image(tmp_path / "s.png", (48, 48), seed=1))
    form = dict(form_schema()["properties"]["options"]["default"], size=48)
    form.update(content_weight=1, style_weight=1, tv_weight=1, style_scale=1)
    ids = {
        check_job(content, [style], options, None, None, settings).job_id
        for options in ({"size": 48}, form, StyleOptions(size=48))
    }
    assert len(ids) == 1
    assert parse_options(None, 1) == parse_options({}, 1) == parse_options(
        form_schema()["properties"]["options"]["default"], 1
    )


# --- a real Prefect UI and worker (slow) --------------------------------------------------------

OLD_SCHEMA = {"type": "object", "properties": {"content": {"type": "string"}}}


@dataclass
class Stack:
    server: PrefectServer
    ui: str  # the Prefect UI's root URL
    worker: subprocess.Popen[bytes]
    worker_log: Path
    data: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A Prefect server with its UI, holding a deployment registered by an older checkout
    (another schema, enforcing it, tags of the administrator's), then a `styledrop worker`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server_setup import client, ensure_pool

    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    server = start_prefect_server(
        tmp_path_factory.mktemp("prefect-ui"),
        port=port,
        extra_env={"PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": f"{ui}/api"},
    )
    data = tmp_path_factory.mktemp("run-form")
    log = ARTIFACTS / "test_run_form-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    worker = None
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            ensure_pool(POOL)
            with client() as api:
                api.create_deployment(
                    flow_id=api.create_flow_from_name(stylize.name),
                    name="stylize",
                    entrypoint="flows/old_place.py:stylize",
                    work_pool_name=POOL,
                    tags=["set-by-admin"],
                    description="an older checkout's",
                    parameter_openapi_schema=OLD_SCHEMA,
                    enforce_parameter_schema=True,
                )
        env = server.env()
        env.update(
            STYLEDROP_DATA_DIR=str(data),
            STYLEDROP_STORAGE=str(data / "out"),
            STYLEDROP_HEARTBEAT_S="1",
            PYTHONUNBUFFERED="1",
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "worker", "--gpus", "none", "--name", "form"],
            env=env,
            cwd=ROOT,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited:\n{log.read_text()}")
            return "worker 'form' ready" in log.read_text(errors="replace")

        wait_until(ready, 240, "the worker to be ready", 0.5)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield Stack(server, ui, worker, log, data)
    finally:
        if worker is not None:
            stop_process(worker, timeout=60)
        stop_process(server.proc)


@pytest.fixture
def api(stack: Stack) -> Iterator[Any]:
    from prefect import get_client

    with get_client(sync_client=True) as c:
        yield c


def wait_final(api: Any, run_id: Any, timeout: float = 240) -> Any:
    def ended() -> Any:
        run = api.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return wait_until(ended, timeout, "the run to end", 0.5)


@pytest.mark.slow
def test_the_worker_gives_an_older_deployment_this_checkouts_form(stack: Stack, api) -> None:
    from flows.server_setup import ensure_deployment

    deployment = api.read_deployment_by_name(DEPLOYMENT)
    assert deployment.parameter_openapi_schema == form_schema()
    assert deployment.entrypoint == "flows/stylize.py:stylize"
    assert deployment.enforce_parameter_schema is False
    assert deployment.description.startswith("Stylise one image")
    assert deployment.tags == ["set-by-admin"] and deployment.work_pool_name == POOL
    assert "updated its entrypoint, description, enforce_parameter_schema, " in (
        stack.worker_log.read_text()
    )
    # Once it matches, a start changes nothing.
    assert ensure_deployment(POOL, update=False) == f"deployment {DEPLOYMENT} exists"
    assert api.read_deployment_by_name(DEPLOYMENT).updated == deployment.updated


@pytest.mark.slow
def test_a_run_started_from_the_prefect_ui_form(stack: Stack, api, browser, tmp_path) -> None:
    """A person fills the form (photo path, a gallery style and a style image's path, size,
    steps, a choice, a switch) and submits; the run has those typed parameters and completes."""
    from flows.layout import run_link_path
    from flows.storage import Storage

    content = str(make_image(tmp_path / "photo.png", (56, 48), seed=5))
    own_style = str(make_image(tmp_path / "own-style.png", (48, 48), seed=6))
    deployment = api.read_deployment_by_name(DEPLOYMENT)
    driver = browser.driver
    driver.set_window_size(1280, 3000)  # the whole form at once, for the screenshot
    driver.get(f"{stack.ui}/v2/deployments/deployment/{deployment.id}/run")

    type_into(driver, "content", content)
    styles = field_block(driver, "styles")
    click(styles, ".//button[normalize-space()='Add item']")
    choose(driver, "Select Gallery style", "waves")
    click(styles, ".//button[normalize-space()='Add item']")
    click(styles, "(.//button[@role='tab'][normalize-space()='Path or URL'])[2]")
    path_box = wait_until(lambda: styles.find_elements("xpath", ".//textarea"), 30, "a path box")
    set_text(path_box[0], own_style)
    type_into(driver, "Size (px)", "48")
    type_into(driver, "Iterations", "6")
    type_into(driver, "First scale (px)", "48")
    choose(driver, "Select Pooling", "avg")
    click(field_block(driver, "Preserve colours"), ".//button[@role='switch']")
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "run-form.png"))
    submit = "//button[normalize-space()='Submit']"
    click(driver, submit)

    def created() -> list[Any]:
        runs = runs_of(api, deployment.id)
        if not runs and driver.current_url.endswith("/run"):
            # Still on the form: on a busy machine a click can land while the form re-renders
            # and be lost (seen once at load 4 on 2 cores). The UI leaves the form on success.
            driver.find_element("xpath", submit).click()
        return runs

    run = wait_until(created, 90, "the run the form created", 5)[0]
    assert run.parameters["content"] == content
    assert run.parameters["styles"] == ["waves", own_style]
    options = run.parameters["options"]
    assert (options["size"], options["iterations"], options["min_size"]) == (48, 6, 48)
    assert options["pooling"] == "avg" and options["preserve_colors"] is True
    assert options["optimizer"] == "adam"  # untouched fields: their defaults

    ended = wait_final(api, run.id)
    assert ended.state.is_completed(), ended.state
    store = Storage(str(stack.data / "out"), Settings())
    record = store.read_json(store.read_json(run_link_path(str(run.id)))["record"])
    assert record["status"] == "completed"
    assert record["params"]["size"] == 48 and record["params"]["pooling"] == "avg"
    assert [s["requested"] for s in record["inputs"]["styles"]] == ["waves", own_style]
    assert store.exists(record["result"])


@pytest.mark.slow
def test_bad_options_from_the_api_fail_the_run_in_plain_words(stack: Stack, api, tmp_path):
    """The schema is the form's, not enforced by the server: the flow refuses in its words."""
    content = str(make_image(tmp_path / "photo.png", (48, 40), seed=7))
    deployment = api.read_deployment_by_name(DEPLOYMENT)
    run = api.create_flow_run_from_deployment(
        deployment.id, parameters={"content": content, "options": {"size": 3}}
    )
    ended = wait_final(api, run.id)
    assert ended.state.is_failed()
    assert "bad parameters: size must be between 16 and 8192, got 3" in ended.state.message


# --- the form, as a person uses it --------------------------------------------------------------


def runs_of(api: Any, deployment_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return api.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    )


def field_block(driver: Any, label: str) -> Any:
    """The form's block for the field labelled ``label`` (optional ones say so in the label)."""
    xpath = (
        f"//label[normalize-space()='{label}' or normalize-space()='{label} (Optional)']"
        "/ancestor::div[.//fieldset][1]"
    )
    return wait_until(lambda: driver.find_elements("xpath", xpath), 60, label)[0]


def type_into(driver: Any, label: str, text: str) -> None:
    xpath = f"//label[normalize-space()='{label}' or normalize-space()='{label} (Optional)']"
    found = wait_until(lambda: driver.find_elements("xpath", xpath), 60, label)[0]
    set_text(driver.find_element("id", found.get_attribute("for")), text)


def set_text(box: Any, text: str) -> None:
    """Replace what ``box`` holds by typing ``text``, a key at a time: the form re-renders as
    it updates, and a fast burst of keys lost one now and then on a busy machine."""
    from selenium.webdriver.common.keys import Keys

    def typed() -> bool:
        box.send_keys(Keys.CONTROL, "a", Keys.BACK_SPACE)
        for key in text:
            box.send_keys(key)
        return box.get_attribute("value") == text

    wait_until(typed, 60, f"{text!r} typed", 0.5)


def click(scope: Any, xpath: str) -> None:
    wait_until(lambda: scope.find_elements("xpath", xpath), 30, xpath)[0].click()


def choose(driver: Any, select: str, value: str) -> None:
    """Open the select whose button is labelled ``select`` and pick ``value``."""
    click(driver, f"//button[@aria-label='{select}']")
    click(driver, f"//*[@role='option'][normalize-space()='{value}']")
    wait_until(
        lambda: driver.find_element("xpath", f"//button[@aria-label='{select}']").text == value,
        10,
        f"{select} to show {value}",
    )
