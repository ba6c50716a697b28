from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.runtime.settings import Settings, SettingsError, load_settings


def test_defaults_mean_embedded_services() -> None:
    """With nothing configured, no database URL or broker is set: both run embedded."""
    settings = load_settings()
    assert settings.database_url is None
    assert settings.kafka_bootstrap is None
    assert settings.partitions == 6
    assert settings.shutdown_deadline == 10.0


def test_bad_setting_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad value names the environment variable and the reason."""
    monkeypatch.setenv("SYNCD_PARTITIONS", "zero")
    with pytest.raises(SettingsError, match=r"SYNCD_PARTITIONS \(partitions\): .*integer"):
        load_settings()


def test_bad_listen_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP address must be host:port."""
    monkeypatch.setenv("SYNCD_HTTP_LISTEN", "localhost")
    with pytest.raises(SettingsError, match="SYNCD_HTTP_LISTEN"):
        load_settings()


def test_toml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TOML file sets values; the environment wins over it."""
    config = tmp_path / "syncd.toml"
    config.write_text('topic_prefix = "fromfile"\ngroup_id = "g-file"\n')
    monkeypatch.setenv("SYNCD_GROUP_ID", "g-env")
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    settings = load_settings(config)
    assert settings.topic_prefix == "fromfile"
    assert settings.group_id == "g-env"


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    """A misspelt key in the file is an error, not silently ignored."""
    config = tmp_path / "syncd.toml"
    config.write_text("partitons = 3\n")
    with pytest.raises(SettingsError, match="partitons"):
        load_settings(config)


def test_cli_exits_non_zero_and_starts_nothing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`syncd run` with a bad setting prints it, exits 2 and creates no data directory."""
    monkeypatch.setenv("SYNCD_SHUTDOWN_DEADLINE", "-1")
    monkeypatch.setenv("SYNCD_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code == 2
    assert "SYNCD_SHUTDOWN_DEADLINE" in result.output
    assert not (tmp_path / "data").exists()


def test_session_timeout_default_follows_the_broker_kind() -> None:
    """Unset, the consumer's session timeout is 6 s on the embedded broker and 10 s on a
    configured cluster (where the group coordinator can move); set, it is what is set."""
    unset = Settings()
    assert unset.session_timeout_ms(embedded=True) == 6_000
    assert unset.session_timeout_ms(embedded=False) == 10_000
    chosen = Settings(consumer_session_timeout_ms=20_000)
    assert chosen.session_timeout_ms(embedded=True) == 20_000
    assert chosen.session_timeout_ms(embedded=False) == 20_000


def test_a_zoho_crm_needs_its_credentials_and_keeps_them_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_CRM_STORE", "zoho")
    with pytest.raises(SettingsError, match="SYNCD_ZOHO_CRM_REFRESH_TOKEN"):
        load_settings(zoho_crm_client_id="1000.X", zoho_crm_client_secret="s3cret-value")
    settings = load_settings(zoho_crm_client_id="1000.X", zoho_crm_client_secret="s3cret-value",
                             zoho_crm_refresh_token="1000.r3fresh")
    assert settings.crm_store == "zoho" and settings.zoho_crm_data_centre == "com"
    assert "s3cret-value" not in repr(settings) and "r3fresh" not in repr(settings)


def test_a_zoho_desk_needs_its_credentials_and_organisation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_DESK_STORE", "zoho")
    credentials: dict[str, Any] = {
        "zoho_desk_client_id": "1000.X", "zoho_desk_client_secret": "s3cret-value",
        "zoho_desk_refresh_token": "1000.r3fresh"}
    with pytest.raises(SettingsError, match="SYNCD_ZOHO_DESK_ORG_ID"):
        load_settings(**credentials)
    with pytest.raises(SettingsError, match="SYNCD_ZOHO_DESK_WEBHOOK_TOKEN"):
        load_settings(**credentials, zoho_desk_org_id="600012",
                      zoho_desk_webhook_url="https://syncd.example.com/webhooks/zoho-desk")
    settings = load_settings(**credentials, zoho_desk_org_id="600012")
    assert settings.desk_store == "zoho" and settings.zoho_desk_sync_key_field == "cf_syncd_key"
    assert "s3cret-value" not in repr(settings) and "r3fresh" not in repr(settings)
