from __future__ import annotations

import json
from pathlib import Path

import pytest

from libs.common.settings import SettingsError, check_deployment, load_settings, variable_names


def test_defaults_suit_local_development() -> None:
    settings = load_settings({})
    assert settings.gateway_port == 8080 and settings.streamer_port == 8081
    assert not settings.auth_enabled and settings.env == "development"
    assert settings.public_url("streamer") == "http://127.0.0.1:8081"


def test_values_are_read_and_converted_from_the_environment() -> None:
    settings = load_settings(
        {
            "SLUICE_HEARTBEAT_S": "2.5",
            "SLUICE_MAX_CONNECTIONS": "10",
            "SLUICE_API_KEYS": "k1:acme, k2:globex",
            "SLUICE_MODELS": '{"llama": {"base_url": "http://up:8000/v1", "upstream_model": "l3"}}',
            "SLUICE_PUBLIC_STREAMER_URL": "https://edge.example/",
        }
    )
    assert settings.heartbeat_s == 2.5 and settings.max_connections == 10
    assert settings.auth_enabled
    assert settings.models["llama"].upstream_model == "l3"
    assert settings.public_url("streamer") == "https://edge.example"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SLUICE_HEARTBEAT_S", "soon"),
        ("SLUICE_HEARTBEAT_S", "0"),
        ("SLUICE_GATEWAY_PORT", "70000"),
        ("SLUICE_MAX_CONNECTIONS", "-1"),
        ("SLUICE_NAMESPACE", "a.b"),
        ("SLUICE_NAMESPACE", "team *"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({variable: value})
    assert variable in str(error.value)
    assert repr(value)[1:-1][:5] in str(error.value)


@pytest.mark.parametrize("value", ["{not json", '{"m": {"surprise": 1}}', '{"m": {"api_key": 7}}'])
def test_a_bad_secret_bearing_value_names_the_variable_and_redacts_the_value(value: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({"SLUICE_MODELS": value})
    assert "SLUICE_MODELS='<redacted>'" in str(error.value)


def test_every_field_is_a_documented_variable() -> None:
    with open("README.md") as readme:
        text = readme.read()
    assert [name for name in variable_names() if f"`{name}`" not in text] == []


STRONG = "x" * 32


@pytest.mark.parametrize(
    "env",
    [
        {"SLUICE_API_KEYS": "k:acme"},
        {"SLUICE_ENV": "production", "SLUICE_ADMIN_PORT": "9090"},
        {"SLUICE_API_KEYS_FILE": "/keys", "SLUICE_SECRET": "short"},
        {"SLUICE_API_KEYS": "k:acme", "SLUICE_SECRET": "sluice-dev-secret"},
        {"SLUICE_API_KEYS": "k:acme", "SLUICE_SECRET": f"{STRONG},short"},
        {
            "SLUICE_ENV": "production",
            "SLUICE_SECRET": "compose-dev-secret",
            "SLUICE_ADMIN_PORT": "1",
        },
    ],
)
def test_a_forgeable_secret_is_refused_where_tokens_guard_tenants(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as error:
        check_deployment(load_settings(env))
    assert "SLUICE_SECRET" in str(error.value)
    assert "short" not in str(error.value) and "dev-secret" not in str(error.value)


def test_secret_rotation_is_a_list_whose_first_entry_signs() -> None:
    settings = load_settings(
        {
            "SLUICE_SECRET": f"{STRONG}, {'y' * 40}",
            "SLUICE_ENV": "production",
            "SLUICE_ADMIN_TOKEN": "t",
        }
    )
    check_deployment(settings)
    assert settings.secrets == (STRONG.encode(), b"y" * 40)
    assert settings.signing_secret == STRONG.encode()


def test_development_without_keys_may_run_on_the_development_key() -> None:
    check_deployment(load_settings({}))


def test_a_bad_models_value_does_not_print_its_api_key() -> None:
    models = '{"m": {"api_key": "sk-live-123", "max_retries": "many"}}'
    with pytest.raises(SettingsError) as error:
        load_settings({"SLUICE_MODELS": models})
    assert "SLUICE_MODELS" in str(error.value) and "sk-live-123" not in str(error.value)


def test_an_upstream_key_may_come_from_an_environment_variable_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-from-env")
    (tmp_path / "key").write_text("sk-from-file\n")
    models = {"a": {"api_key_env": "UPSTREAM_KEY"}, "b": {"api_key_file": str(tmp_path / "key")}}
    settings = load_settings({"SLUICE_MODELS": json.dumps(models)})
    assert settings.models["a"].upstream_key() == "sk-from-env"
    assert settings.models["b"].upstream_key() == "sk-from-file"
    missing = load_settings({"SLUICE_MODELS": '{"c": {"api_key_env": "NOT_SET_ANYWHERE"}}'})
    with pytest.raises(SettingsError, match="NOT_SET_ANYWHERE"):
        missing.models["c"].upstream_key()


def test_production_refuses_public_operator_endpoints() -> None:
    env = {"SLUICE_ENV": "production", "SLUICE_SECRET": STRONG}
    with pytest.raises(SettingsError, match="SLUICE_ADMIN_PORT or SLUICE_ADMIN_TOKEN"):
        check_deployment(load_settings(env))
    check_deployment(load_settings({**env, "SLUICE_ADMIN_PORT": "9090"}))
    check_deployment(load_settings({**env, "SLUICE_ADMIN_TOKEN": "operator-token"}))
