"""posesuite-gather on a hand-made multirun folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posesuite.cli.gather import main, read_jobs, varying_keys


def make_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path) -> Path:
    for index, (top_k, refine, ap) in enumerate(
        [(6, "true", 0.5), (8, "true", 0.6), (8, "false", 0.4)]
    ):
        make_job(
            tmp_path,
            str(index),
            ["experiment=cpn", f"model.module.loss.top_k={top_k}", f"+head.use_refine={refine}"],
            {"AP": ap, "AP50": ap + 0.2, "checkpoint": "x.ckpt"},
        )
    make_job(tmp_path, "3", ["experiment=cpn", "model.module.loss.top_k=10"], None)  # failed job
    return tmp_path


def test_table_has_the_varying_overrides_and_the_metrics(sweep, tmp_path, capsys):
    jobs = read_jobs(sweep)
    assert [job["job"] for job in jobs] == ["0", "1", "2"]  # the job without metrics is skipped
    assert varying_keys(jobs) == ["model.module.loss.top_k", "head.use_refine"]
    out = tmp_path / "table.md"
    main(
        [
            str(sweep),
            "--metrics",
            "AP",
            "AP50",
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    lines = out.read_text().splitlines()
    assert lines[0] == "| job | top_k | use_refine | AP | AP50 |"
    assert lines[2] == "| 0 | 6 | true | 0.5000 | 0.7000 |"
    assert lines[4] == "| 2 | 8 | false | 0.4000 | 0.6000 |"
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert "no metrics.json" in capsys.readouterr().err


def test_empty_sweep_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no finished job"):
        read_jobs(tmp_path)
