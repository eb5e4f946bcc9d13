"""The client's server and token: flags, then BULKIO_URL / BULKIO_TOKEN, then the profile
(--profile, BULKIO_PROFILE, 'default') of $XDG_CONFIG_HOME/bulkio/config.toml; the file is
written by hand, read by tomllib, private (0600) and replaced atomically."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from engine.client import config
from engine.client.errors import ClientError, NotAllowed


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "bulkio" / "config.toml"
    config.save_profile(path, "default", "http://default:8000", "tok-default")
    config.save_profile(path, "staging", "https://staging.example/", "tok-staging")
    return path


# (flags url/token/profile, environment, expected url, token, where each came from)
CASES = [
    ((None, None, None), {}, "http://default:8000", "tok-default", "profile", "profile"),
    (("http://flag", None, None), {}, "http://flag", "tok-default", "--url", "profile"),
    ((None, "tok-flag", None), {}, "http://default:8000", "tok-flag", "profile", "--token"),
    ((None, None, None), {"BULKIO_URL": "http://env"}, "http://env", "tok-default",
     "BULKIO_URL", "profile"),
    ((None, None, None), {"BULKIO_TOKEN": "tok-env"}, "http://default:8000", "tok-env",
     "profile", "BULKIO_TOKEN"),
    (("http://flag", "tok-flag", None), {"BULKIO_URL": "http://env", "BULKIO_TOKEN": "tok-env"},
     "http://flag", "tok-flag", "--url", "--token"),
    ((None, None, "staging"), {}, "https://staging.example", "tok-staging", "profile", "profile"),
    ((None, None, None), {"BULKIO_PROFILE": "staging"}, "https://staging.example", "tok-staging",
     "profile", "profile"),
    ((None, None, "default"), {"BULKIO_PROFILE": "staging"}, "http://default:8000",
     "tok-default", "profile", "profile"),
    ((None, None, "staging"), {"BULKIO_TOKEN": "tok-env"}, "https://staging.example", "tok-env",
     "profile", "BULKIO_TOKEN"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "environ", "url", "token", "url_from", "token_from"), CASES)
def test_each_value_comes_from_its_flag_then_its_variable_then_the_profile(
    cfg: Path,
    flags: tuple[str | None, str | None, str | None],
    environ: dict[str, str],
    url: str,
    token: str,
    url_from: str,
    token_from: str,
) -> None:
    target = config.resolve(*flags, environ=environ, path=cfg)
    assert (target.url, target.token) == (url, token)
    assert target.url_from.startswith(url_from)
    assert target.token_from is not None and target.token_from.startswith(token_from)


def test_a_named_profile_that_does_not_exist_is_an_error_unless_nothing_is_needed(
    cfg: Path,
) -> None:
    with pytest.raises(ClientError, match=r"no profile 'prod' .*profiles: default, staging"):
        config.resolve(None, None, "prod", environ={}, path=cfg)
    with pytest.raises(ClientError, match="no profile 'prod'"):
        config.resolve(None, None, None, environ={"BULKIO_PROFILE": "prod"}, path=cfg)
    target = config.resolve("http://u", "t", "prod", environ={}, path=cfg)
    assert (target.url, target.token) == ("http://u", "t")


def test_without_any_source_the_messages_say_where_to_give_them(tmp_path: Path) -> None:
    empty = tmp_path / "none.toml"
    with pytest.raises(ClientError, match="no server given: pass --url, set BULKIO_URL"):
        config.resolve(None, None, None, environ={}, path=empty)
    target = config.resolve("http://u", None, None, environ={}, path=empty)
    with pytest.raises(NotAllowed, match="no API token: pass --token, set BULKIO_TOKEN"):
        config.require_token(target)


@pytest.mark.parametrize("url", ["ftp://x", "localhost:8000", "http://", ""])
def test_urls_must_be_http(url: str, tmp_path: Path) -> None:
    with pytest.raises(ClientError):
        config.resolve(url or None, "t", None, environ={"BULKIO_URL": url} if url else {},
                       path=tmp_path / "none.toml")  # fmt: skip


def test_the_file_is_private_keeps_other_profiles_and_survives_odd_values(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cfg" / "bulkio" / "config.toml"
    odd = 'tok"with\\quotes\tand\x01controls é'
    config.save_profile(path, 'a b.c"d', "http://one", odd)
    config.save_profile(path, "default", "http://two", "t2")
    config.save_profile(path, "default", "http://three", "t3")  # replaced, not added
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = tomllib.loads(path.read_text())
    assert data["profiles"] == {
        'a b.c"d': {"url": "http://one", "token": odd},
        "default": {"url": "http://three", "token": "t3"},
    }
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_the_path_follows_xdg_config_home(tmp_path: Path) -> None:
    assert config.config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "bulkio" / "config.toml"
    )
    # Relative values are ignored, as the XDG specification says.
    assert config.config_path({"XDG_CONFIG_HOME": "rel"}) == (
        Path.home() / ".config" / "bulkio" / "config.toml"
    )


def test_a_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[profiles.default\nurl = 1")
    with pytest.raises(ClientError, match=f"cannot read {path}"):
        config.resolve(None, None, None, environ={}, path=path)


def test_suggested_commands_repeat_the_flags_but_never_the_token(cfg: Path) -> None:
    target = config.resolve("http://flag", "secret-token", "staging", environ={}, path=cfg)
    assert target.flags() == ["--profile", "staging", "--url", "http://flag", "--token", "TOKEN"]
    target = config.resolve(None, None, None, environ={"BULKIO_PROFILE": "staging"}, path=cfg)
    assert target.flags() == []
