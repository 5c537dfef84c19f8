from __future__ import annotations

import pytest

from libs.common.settings import SettingsError, load_settings, variable_names


def test_defaults_suit_local_development() -> None:
    settings = load_settings({})
    assert settings.gateway_port == 8080 and settings.streamer_port == 8081
    assert settings.keys_to_tenants == {}
    assert settings.public_url("streamer") == "http://127.0.0.1:8081"


def test_values_are_read_and_converted_from_the_environment() -> None:
    settings = load_settings(
        {
            "SLUICE_HEARTBEAT_S": "2.5",
            "SLUICE_MAX_CONNECTIONS": "10",
            "SLUICE_API_KEYS": "k1:acme, k2:globex,k3",
            "SLUICE_MODELS": '{"llama": {"base_url": "http://up:8000/v1", "upstream_model": "l3"}}',
            "SLUICE_PUBLIC_STREAMER_URL": "https://edge.example/",
        }
    )
    assert settings.heartbeat_s == 2.5 and settings.max_connections == 10
    assert settings.keys_to_tenants == {"k1": "acme", "k2": "globex", "k3": "k3"}
    assert settings.models["llama"].upstream_model == "l3"
    assert settings.public_url("streamer") == "https://edge.example"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SLUICE_HEARTBEAT_S", "soon"),
        ("SLUICE_HEARTBEAT_S", "0"),
        ("SLUICE_GATEWAY_PORT", "70000"),
        ("SLUICE_MAX_CONNECTIONS", "-1"),
        ("SLUICE_MODELS", "{not json"),
        ("SLUICE_MODELS", '{"m": {"surprise": 1}}'),
        ("SLUICE_NAMESPACE", "a.b"),
        ("SLUICE_NAMESPACE", "team *"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_value(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings({variable: value})
    assert variable in str(error.value)
    assert repr(value)[1:-1][:5] in str(error.value)


def test_every_field_is_a_documented_variable() -> None:
    with open("README.md") as readme:
        text = readme.read()
    assert [name for name in variable_names() if f"`{name}`" not in text] == []
