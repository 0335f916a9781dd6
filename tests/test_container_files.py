"""What the container files promise, checked without building anything (tests/test_container.py
builds and runs them): the compose stack names every image through a variable with a public
default, keeps Prefect from phoning home, passes the auth string, publishes on loopback, and
gives a stopped worker the time to hand its jobs back; `styledrop health` finds what runs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import ROOT

from flows.commands.health import command_args, running_command, styledrop_args
from flows.network import exposure_problem
from flows.settings import Settings
from flows.worker import PARK_TIMEOUT_S

COMPOSE = yaml.safe_load((ROOT / "deployments/compose.yaml").read_text())
SERVICES = COMPOSE["services"]
CLIENTS = ("worker", "watch", "dashboard")


def default_of(value: str) -> str | None:
    """The default of a ``${VAR:-default}`` (None when the value is not one)."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-([^}]+)\}", value)
    return match.group(1) if match else None


def test_every_image_is_a_variable_with_a_public_default() -> None:
    for name, service in SERVICES.items():
        assert default_of(service["image"]), (name, service["image"])
    assert default_of(SERVICES["postgres"]["image"]) == "postgres:16"


def test_no_service_phones_home() -> None:
    for name, service in SERVICES.items():
        env = service["environment"]
        assert env["DO_NOT_TRACK"] == "1", name
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false", name


def test_the_server_requires_the_auth_string_every_client_sends() -> None:
    wanted = "${PREFECT_API_AUTH_STRING:?set PREFECT_API_AUTH_STRING in .env}"
    assert SERVICES["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == wanted
    for name in CLIENTS:
        env = SERVICES[name]["environment"]
        assert env["PREFECT_API_AUTH_STRING"] == wanted, name
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name


def test_published_ports_are_on_loopback_unless_asked() -> None:
    published = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert published
    for port in published:
        assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), port


def test_a_stopped_worker_has_the_time_to_hand_its_jobs_back() -> None:
    worker = SERVICES["worker"]
    grace = float(worker["stop_grace_period"].removesuffix("s"))
    assert grace > Settings().worker_grace_s + PARK_TIMEOUT_S
    assert all(SERVICES[name].get("init") for name in (*CLIENTS, "prefect-server"))
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


def test_the_dashboard_is_judged_by_where_its_port_is_published() -> None:
    env = SERVICES["dashboard"]["environment"]
    assert env["STYLEDROP_PUBLISHED_ON"] == "${BIND_ADDRESS:-127.0.0.1}"
    inside = Settings(host="0.0.0.0", dashboard_url="http://127.0.0.1:8501")
    assert exposure_problem(inside, api=False) is not None  # bare 0.0.0.0: refused
    on_loopback = inside.model_copy(update={"published_on": "127.0.0.1"})
    assert exposure_problem(on_loopback, api=False) is None
    on_network = inside.model_copy(update={"published_on": "0.0.0.0"})
    assert "sign-in" in exposure_problem(on_network, api=False)


def test_data_and_database_live_in_volumes() -> None:
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    for name in CLIENTS:
        assert "${STYLEDROP_DATA:-./data}:/data" in SERVICES[name]["volumes"], name


def test_the_examples_hold_no_secret() -> None:
    example = (ROOT / "deployments/.env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=$", example, re.M)
    assert re.search(r"^PREFECT_API_AUTH_STRING=$", example, re.M)
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"deployments/.env", "deployments/styledrop.env"} <= set(ignored)
    context = (ROOT / ".dockerignore").read_text().split()
    assert "deployments/.env" in context and "deployments/*.env" in context


def test_styledrop_commands_are_found_in_command_lines() -> None:
    assert styledrop_args(["/opt/venv/bin/python", "/opt/venv/bin/styledrop", "worker"]) == [
        "worker"
    ]
    assert styledrop_args(["/run/podman-init", "--", "styledrop", "up"]) == ["up"]
    assert styledrop_args(["python", "-m", "flows.cli", "dashboard", "--port", "9"]) == [
        "dashboard",
        "--port",
        "9",
    ]
    assert styledrop_args(["python", "-m", "prefect", "server", "start"]) is None
    assert styledrop_args(["python", "flows.cli"]) is None


def test_the_lowest_pid_of_a_styledrop_part_is_what_runs(tmp_path: Path) -> None:
    def process(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    process(7, "python", "-m", "flows.cli", "worker", "--gpus", "0")
    process(3, "styledrop", "worker", "--pool", "gpus")
    process(2, "prefect", "server", "start")
    process(1, "/usr/bin/catatonit", "--", "styledrop", "health")  # the check itself: no part
    (tmp_path / "self").mkdir()
    assert running_command(tmp_path) == ["worker", "--pool", "gpus"]
    assert command_args("worker", ["--pool", "gpus"]).pool == "gpus"
    assert command_args("dashboard", ["--host", "0.0.0.0", "--port", "9"]).port == 9
