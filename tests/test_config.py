"""Settings: sources, secrets from files, errors that name the field, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.cli import main as cli_main
from connector.config import load_settings
from connector.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_without_any_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIAGE_CONFIG_FILE", raising=False)
    settings = load_settings()
    assert settings.helpdesk == "zammad"
    assert settings.policy.mode == "live"
    assert settings.server.host == "127.0.0.1"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path / "c.yaml",
        "helpdesk: rt\nrt:\n  url: https://rt.example/\ningest:\n  concurrency: 4\n",
    )
    monkeypatch.setenv("TRIAGE_INGEST__CONCURRENCY", "9")
    settings = load_settings(config)
    assert settings.helpdesk == "rt"
    assert settings.rt.url == "https://rt.example"
    assert settings.ingest.concurrency == 9


def test_config_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "c.yaml", "policy:\n  mode: shadow\n")
    monkeypatch.setenv("TRIAGE_CONFIG_FILE", str(config))
    assert load_settings().policy.mode == "shadow"


def test_secret_from_a_mounted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = write(tmp_path / "token", "tok-123\n")
    monkeypatch.setenv("TRIAGE_ZAMMAD__TOKEN_FILE", str(token))
    settings = load_settings()
    assert settings.zammad.token is not None
    assert settings.zammad.token.get_secret_value() == "tok-123"


def test_unreadable_secret_file_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIAGE_RT__TOKEN_FILE", "/nonexistent/token")
    with pytest.raises(ConfigError, match=r"token_file: cannot read /nonexistent/token"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ingest:\n  concurrency: 0\n", r"ingest\.concurrency \(TRIAGE_INGEST__CONCURRENCY\)"),
        ("zammad:\n  url: ftp://x\n", r"zammad\.url .*http:// or https://"),
        ("policy:\n  mode: loud\n", r"policy\.mode"),
        ("ingest:\n  shard_count: 2\n  shard_index: 2\n", r"shard_index \(2\) must be below"),
        ("zammad:\n  tokn: x\n", r"zammad\.tokn .*Extra inputs are not permitted"),
        ("rt:\n  priority_levels: {Low: 300}\n", r"RT priorities are 0-255"),
        ("helpdesk: jira\n", r"helpdesk"),
    ],
)
def test_bad_values_fail_naming_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(write(tmp_path / "c.yaml", text))


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_print_config_redacts_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRIAGE_ZAMMAD__TOKEN", "very-secret-token")
    monkeypatch.setenv("TRIAGE_ZAMMAD__WEBHOOK_SECRET", "hook-secret")
    assert cli_main(["print-config"]) == 0
    out = capsys.readouterr().out
    assert "very-secret-token" not in out and "hook-secret" not in out
    assert "token: '**********'" in out


def test_print_config_reports_errors_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path / "c.yaml", "ingest:\n  queue_size: -1\n")
    assert cli_main(["print-config", "--config", str(config)]) == 2
    assert "ingest.queue_size" in capsys.readouterr().err


def test_readme_settings_table_is_current() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "settings_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
