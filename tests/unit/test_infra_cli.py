"""The up/down/status command line both local servers share (infra/cli.py): one line per outcome, exit codes,
--fresh, errors as one line; and the two servers' CLIs on an empty data directory (nothing is started)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from bp.errors import StandInError
from infra import kafka, standin
from infra.cli import ServerCli


@dataclass
class FakeServer:
    pid: int | None
    alive: bool = True
    where: str = "127.0.0.1:1"
    waited: int = 0
    stopped: int = 0

    def wait_ready(self) -> None:
        self.waited += 1

    def stop(self) -> None:
        self.stopped += 1
        self.alive = False


def cli(recorded: FakeServer | None, started: list[Path], fail: bool = False) -> ServerCli[FakeServer]:
    def start(args: argparse.Namespace, previous: FakeServer | None) -> str:
        if fail:
            raise StandInError("port 127.0.0.1:1 is already in use")
        started.append(args.data_dir)
        return f"up (pid 7), restart of {previous.pid if previous else None}"

    return ServerCli(
        name="srv", prog="srv", description="d", default_dir=Path("x"), find=lambda _: recorded, start=start
    )


def test_status_says_whether_it_runs_with_exit_code(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli(None, []).main(["status", "--data-dir", str(tmp_path)]) == 1
    assert cli(FakeServer(5, alive=False), []).main(["status"]) == 1
    assert cli(FakeServer(5), []).main(["status"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "srv: not running",
        "srv: not running",
        "srv: running (pid 5) on 127.0.0.1:1",
    ]


def test_up_starts_once_and_fresh_forgets_the_recorded_server(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    started: list[Path] = []
    running = FakeServer(5)
    assert cli(running, started).main(["up", "--data-dir", str(tmp_path)]) == 0
    assert started == [] and running.waited == 1
    stale = FakeServer(5, alive=False)
    assert cli(stale, started).main(["up", "--data-dir", str(tmp_path)]) == 0
    (tmp_path / "old").write_text("data")
    assert cli(stale, started).main(["up", "--data-dir", str(tmp_path), "--fresh"]) == 0
    assert started == [tmp_path, tmp_path] and not tmp_path.exists()
    assert capsys.readouterr().out.splitlines() == [
        "srv: already running (pid 5) on 127.0.0.1:1",
        "srv: up (pid 7), restart of 5",
        "srv: up (pid 7), restart of None",
    ]


def test_down_stops_what_is_recorded(capsys: pytest.CaptureFixture[str]) -> None:
    server = FakeServer(5)
    assert cli(server, []).main(["down"]) == 0
    assert cli(None, []).main(["down"]) == 0
    assert server.stopped == 1
    assert capsys.readouterr().out.splitlines() == ["srv: stopped (pid 5)", "srv: not running, nothing to stop"]


def test_an_error_is_one_line_on_stderr_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(None, [], fail=True).main(["up"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "srv: error: port 127.0.0.1:1 is already in use\n"


def test_both_servers_use_it_on_an_empty_data_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BP_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert standin.main(["status", "--data-dir", str(tmp_path)]) == 1
    assert standin.main(["up", "--data-dir", str(tmp_path)]) == 0  # real endpoints named: nothing started
    assert kafka.main(["status", "--data-dir", str(tmp_path)]) == 1
    assert kafka.main(["down", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "standin: not running",
        "standin: BP_KAFKA_BOOTSTRAP/BP_ES_URL are set: using those endpoints, nothing started",
        "kafka: not running",
        "kafka: not running, nothing to stop",
    ]
    assert list(tmp_path.iterdir()) == []
