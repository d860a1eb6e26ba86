"""The CLI end to end on a temporary database: init, import, show, window, and readable errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from advisor.cli.app import main


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["advisor", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'cli.db'}"

    def call(*args: str) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, "--db-url", db, *args)

    return call


def test_init_import_show_window(cli, synthetic_bundle: Path) -> None:
    code, out, _ = cli("init")
    assert code == 0 and "migrated empty -> " in out
    code, out, _ = cli("init")
    assert code == 0 and "up to date" in out
    code, out, _ = cli("data", "import", str(synthetic_bundle), "--quiet")
    assert code == 0 and "daily bars:" in out and "added" in out
    code, out, _ = cli("data", "import", str(synthetic_bundle), "--quiet")
    assert code == 0 and "companies: 0 added, 3 already stored" in out
    code, out, _ = cli("data", "show", "AAA", "--rows", "3", "--as-of", "2014-03-07")
    assert code == 0 and "2014-03-07" in out and "2014-03-10" not in out
    code, out, _ = cli("data", "window", "BBB", "--date", "2014-03-07", "--label", "--weeks", "2")
    assert code == 0
    assert "[Week ending 2014-02-28]" in out and "[Week ending 2014-03-07]" in out
    assert "label" in out and "2014-03-14" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("data", "window", "AAA", "--date", "2999-01-01"), "in the future"),
        (("data", "window", "ZZZ", "--date", "2014-03-07"), "unknown ticker 'ZZZ'"),
        (("data", "window", "AAA", "--date", "2014-01-10"), "earliest forecast date"),
        (("data", "window", "AAA", "--date", "March"), "is not a date"),
        (("data", "show", "ZZZ"), "unknown ticker"),
    ],
)
def test_errors_are_one_readable_line_with_status_2(cli, synthetic_bundle: Path, args, message: str) -> None:
    cli("init")
    cli("data", "import", str(synthetic_bundle), "--quiet")
    code, out, err = cli(*args)
    assert code == 2
    assert message in " ".join(err.split())
    assert "Traceback" not in err + out


def test_commands_refuse_an_uninitialised_database(cli, synthetic_bundle: Path) -> None:
    code, _, err = cli("data", "import", str(synthetic_bundle))
    assert code == 2 and "advisor init" in err


def test_bad_bundle_through_the_cli(cli, tmp_path: Path) -> None:
    cli("init")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("data", "import", str(empty))
    assert code == 2 and "no bundle files found" in err


def test_config_command_hides_secrets(cli, monkeypatch) -> None:
    monkeypatch.setenv("ADVISOR_ALPACA_API_KEY", "AK-SHOULD-NOT-PRINT")
    code, out, _ = cli("config")
    assert code == 0 and "database_url" in out and "AK-SHOULD-NOT-PRINT" not in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--no-such-flag",), "No such option: --no-such-flag (see 'advisor --help')"),
        (("init", "--bogus"), "No such option: --bogus (see 'advisor init --help')"),
        (("data", "window", "AAPL"), "Missing option '--date'"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(monkeypatch, capsys, args, needle) -> None:
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_bare_advisor_shows_the_help_with_exit_2(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys)
    assert code == 2 and "Commands" in out + err and "Traceback" not in out + err
