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
        (("feedback", "rate", "--user", "x", "--forecast", "99999999999999999999", "--up"), "--forecast"),
        (("feedback", "choose", "--user", "x", "--a", "1", "--b", "18446744073709551616", "--choice", "a"), "--b"),
        (("model", "activate", "--user", "x", "--version", "0"), "--version"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(monkeypatch, capsys, args, needle) -> None:
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_a_questionnaire_answer_given_twice_is_refused(cli) -> None:
    cli("init")
    code, _, err = cli("profile", "set", "--user", "dup", "--answers", "horizon=0,horizon=3")
    assert code == 2 and "'horizon' is answered twice" in err and "Traceback" not in err


def test_bare_advisor_shows_the_help_with_exit_2(monkeypatch, capsys) -> None:
    code, out, err = run_cli(monkeypatch, capsys)
    assert code == 2 and "Commands" in out + err and "Traceback" not in out + err


@pytest.mark.parametrize("name", ["[/oops]", "[bold red]x[/]"])
def test_a_user_name_with_markup_is_printed_as_typed(cli, name: str) -> None:
    cli("init")
    code, out, err = cli("profile", "set", "--user", name, "--archetype", "moderate")
    assert code == 0 and "Traceback" not in out + err
    assert f"saved {name}'s profile version 1" in " ".join(out.split())


PASSWORD_URL = "postgresql+psycopg://someone:hunter2-secret@127.0.0.1:1/advisor"


@pytest.mark.parametrize(
    ("args", "url", "needle"),
    [
        (("init",), "notadb://x", "unknown database kind 'notadb'"),
        (("data", "show", "AAPL"), "notadb://x", "unknown database kind 'notadb'"),
        (("init",), "sqlite:////proc/no-such-dir/advisor.db", "cannot create the directory of the SQLite database"),
        (("data", "show", "AAPL"), "sqlite:////proc/no-such-dir/advisor.db", "is not initialised or not migrated"),
        (("init",), PASSWORD_URL, "cannot use the database at postgresql+psycopg://someone:***@127.0.0.1:1/advisor"),
        (("data", "show", "AAPL"), PASSWORD_URL, "cannot use the database at postgresql+psycopg://someone:***@127.0.0.1:1/advisor"),
    ],
)
def test_a_bad_database_url_is_one_line_and_never_shows_a_password(monkeypatch, capsys, args, url: str, needle: str) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "--db-url", url, *args)
    assert code == 2 and needle in " ".join(err.split()), err
    assert "Traceback" not in out + err and "hunter2" not in out + err


def test_a_command_on_a_missing_database_file_creates_no_file(monkeypatch, capsys, tmp_path: Path) -> None:
    path = tmp_path / "never-initialised.db"
    code, _, err = run_cli(monkeypatch, capsys, "--db-url", f"sqlite:///{path}", "data", "show", "AAPL")
    assert code == 2 and "run 'advisor init'" in err
    assert not path.exists()


@pytest.mark.parametrize(("name", "needle"), [("u" * 101, "at most 100"), ("a\tb", "control characters"), ("nul\x00x", "control characters")])
def test_a_bad_user_name_is_refused_and_nothing_is_stored(cli, name: str, needle: str) -> None:
    cli("init")
    code, out, err = cli("profile", "set", "--user", name, "--archetype", "moderate")
    assert code == 2 and needle in err and "Traceback" not in out + err
