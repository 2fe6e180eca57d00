"""Every setting is documented in .env.example and the README, and parsed strictly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from gptmini_graphql.settings import Settings

ROOT = Path(__file__).parents[1]
SETTINGS = {name.upper() for name in Settings.model_fields}


def test_env_example_lists_every_setting() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    assert listed == SETTINGS


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    text = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, re.MULTILINE))
    assert documented == SETTINGS


def test_env_example_is_valid_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text(encoding="utf-8"))
    Settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [("rate_limit", "lots"), ("login_rate_limit", "5/fortnight"), ("port", "0")],
)
def test_bad_values_fail_at_start_up(name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings(_env_file=None, **{name: value})


def test_empty_values_mean_unset() -> None:
    settings = Settings(
        _env_file=None, openai_api_key="", openai_base_url="", redis_url=""
    )
    assert settings.openai_api_key is None and not settings.upstream_configured
    assert settings.redis_url is None


def test_model_prices_add_to_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PRICES", '{"qwen2.5": {"input": 0, "output": 0}}')
    settings = Settings(_env_file=None)
    assert set(settings.model_prices) >= {"qwen2.5", "gpt-4o-mini"}
