"""Job identity, records, validation and the retry rule - the flow's logic without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_image
from prefect.states import Completed, Failed

from engine import StyleParams
from flows import jobs
from flows.checks import locate_style, open_image, output_format
from flows.jobs import JobRecord, JobRejected, JobStatus
from flows.options import parse_options
from flows.settings import Settings
from flows.tasks.retry import retry_on_infrastructure_fault


def test_job_id_depends_on_bytes_and_params_not_on_how_blend_is_written() -> None:
    base = jobs.compute_job_id("c" * 64, ["a" * 64, "b" * 64], StyleParams(size=64))
    same = jobs.compute_job_id(
        "c" * 64, ["a" * 64, "b" * 64], StyleParams(size=64, style_blend=[2.0, 2.0])
    )
    assert base == same and len(base) == 16
    assert base != jobs.compute_job_id("d" * 64, ["a" * 64, "b" * 64], StyleParams(size=64))
    assert base != jobs.compute_job_id("c" * 64, ["b" * 64, "a" * 64], StyleParams(size=64))
    assert base != jobs.compute_job_id("c" * 64, ["a" * 64, "b" * 64], StyleParams(size=65))
    assert base != jobs.compute_job_id(
        "c" * 64, ["a" * 64, "b" * 64], StyleParams(size=64, style_blend=[3.0, 1.0])
    )


def test_record_life_cycle() -> None:
    job = jobs.Job(
        job_id="0123456789abcdef",
        content="/in/photo.png",
        content_sha256="c" * 64,
        content_size=(48, 40),
        styles=[jobs.StyleInput(requested="mosaic", source="/styles/mosaic.png", sha256="a" * 64)],
        params=StyleParams(size=48).to_dict(),
    )
    record = JobRecord.start(job, "run-1", force=False)
    assert record.status == "running"
    assert record.result == "_jobs/0123456789abcdef/result.png"
    done = record.completed(
        {"backbone": "random(seed=0)", "device": "cpu", "steps": 10, "total_steps": 10,
         "steps_per_second": 5.0, "resumed_from_step": 3, "seconds": 2.0}
    )
    assert done.status is JobStatus.COMPLETED and done.resumed_from_step == 3
    assert done.timings.engine_s == 2.0 and done.timings.finished_at
    assert done.is_completed and not record.is_completed
    cancelled = record.ended(JobStatus.CANCELLED, "stop")
    assert cancelled.status == "cancelled" and cancelled.error == "stop"
    # The file is JSON people read, and reads back as it was written.
    assert JobRecord.model_validate_json(done.to_json()) == done
    assert b'"status": "completed"' in done.to_json()


def test_records_written_by_an_older_styledrop_still_read() -> None:
    old = {
        "job_id": "0123456789abcdef", "status": "completed", "flow_run_id": "r",
        "inputs": {"content": "/in/p.png", "content_sha256": "c", "content_size": [4, 4],
                   "styles": [{"requested": "mosaic", "source": "/s.png", "sha256": "a"}]},
        "params": {"size": 48}, "timings": {"started_at": "2026-01-01T00:00:00+00:00"},
        "some_field_of_the_past": 1, "versions": None,
    }
    old.pop("versions")
    record = JobRecord.model_validate(old)
    assert record.is_completed and record.inputs.content_size == (4, 4)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"size": 4}, "size must be between"),
        ({"colour": 1}, "unknown option(s): colour"),
        ({"size": "big"}, "size must be a valid integer"),
        ({"style_blend": [1, 2, 3]}, "3 blend weights for 1 styles"),
        ("size=64", "must be a mapping"),
    ],
)
def test_bad_parameters_are_refused_with_a_reason(options, reason) -> None:
    with pytest.raises(JobRejected, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_options(options, n_styles=1)


def test_validation_helpers_refuse_with_reasons(tmp_path: Path) -> None:
    settings = Settings(styles_dir=tmp_path / "styles")
    with pytest.raises(JobRejected, match="unknown style 'nope'"):
        locate_style("nope", settings)
    assert locate_style("s3://bucket/style.png", settings) == "s3://bucket/style.png"
    make_image(tmp_path / "styles" / "mosaic.png")
    assert locate_style("Mosaic", settings).endswith("mosaic.png")
    with pytest.raises(JobRejected, match="not-an-image.txt"):
        open_image(b"hello, not an image", "not-an-image.txt", settings)
    with pytest.raises(JobRejected, match="must end in one of"):
        output_format("result.gif")
    assert output_format("x/result.JPG") == "jpeg"


def test_retry_rule_retries_infrastructure_faults_only() -> None:
    def failed(exc: BaseException):
        return Failed(data=exc)

    assert retry_on_infrastructure_fault(None, None, failed(ConnectionResetError("reset")))
    assert retry_on_infrastructure_fault(None, None, failed(TimeoutError()))
    assert not retry_on_infrastructure_fault(None, None, failed(JobRejected("too small")))
    assert not retry_on_infrastructure_fault(None, None, failed(FileNotFoundError("gone")))
    assert not retry_on_infrastructure_fault(None, None, failed(RuntimeError("bug")))
    assert not retry_on_infrastructure_fault(None, None, Completed())
