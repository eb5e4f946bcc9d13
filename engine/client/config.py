"""Where the server and the token come from: flags, then ``BULKIO_URL`` / ``BULKIO_TOKEN``, then a
named profile of the config file (``--profile``, else ``BULKIO_PROFILE``, else ``default``).

The file is ``$XDG_CONFIG_HOME/bulkio/config.toml`` (``~/.config/bulkio/config.toml``), mode
0600, written by ``bulkio login``::

    [profiles.default]
    url = "https://bulkio.example.com"
    token = "bk_..."

It is read with :mod:`tomllib` and written here by hand (the standard library has no TOML
writer; the file holds nothing but string values under ``[profiles."NAME"]``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.client.errors import ClientError, NotAllowed

DEFAULT_PROFILE = "default"
#: The client's environment variables (not server settings: engine/settings.py ignores them).
URL_VAR, TOKEN_VAR, PROFILE_VAR = "BULKIO_URL", "BULKIO_TOKEN", "BULKIO_PROFILE"


@dataclass(frozen=True, slots=True)
class Target:
    """The server and token a command talks to, and where each came from (for messages)."""

    url: str
    token: str | None
    profile: str
    url_from: str
    token_from: str | None
    #: "--profile", BULKIO_PROFILE, or None (the default profile).
    profile_from: str | None = None

    def flags(self) -> list[str]:
        """The flags that chose this target, for commands the client suggests (never the
        token's value)."""
        out: list[str] = []
        if self.profile_from == "--profile":
            out += ["--profile", self.profile]
        if self.url_from == "--url":
            out += ["--url", self.url]
        if self.token_from == "--token":
            out += ["--token", "TOKEN"]
        return out


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "bulkio" / "config.toml"


def read_profiles(path: Path) -> dict[str, dict[str, str]]:
    """The file's profiles (an absent file: none)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ClientError(f"cannot read {path}: {exc}") from exc
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ClientError(f"{path}: [profiles] must be a table of profiles")
    return {
        str(name): {k: v for k, v in table.items() if isinstance(v, str)}
        for name, table in profiles.items()
        if isinstance(table, dict)
    }


def _toml_string(value: str) -> str:
    """A TOML basic string: backslash, quote and control characters escaped."""
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render(profiles: Mapping[str, Mapping[str, str]]) -> str:
    lines = ["# bulkio client profiles, written by `bulkio login` (keep this file private)."]
    for name in sorted(profiles):
        lines += ["", f"[profiles.{_toml_string(name)}]"]
        lines += [f"{key} = {_toml_string(value)}" for key, value in profiles[name].items()]
    return "\n".join(lines) + "\n"


def save_profile(path: Path, name: str, url: str, token: str) -> None:
    """Add or replace one profile, keeping the others; the file is replaced atomically and is
    readable by its owner only (0600), from the first byte on."""
    profiles = read_profiles(path)
    profiles[name] = {"url": url, "token": token}
    text = render(profiles)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)  # whatever the umask did
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_url(url: str, source: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ClientError(f"{source}: {url!r} is not an http:// or https:// URL")
    return url


def resolve(
    url: str | None,
    token: str | None,
    profile: str | None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Target:
    """The server and token: each from its flag, else its variable, else the profile."""
    env = os.environ if environ is None else environ
    path = path or config_path(env)
    name = profile or env.get(PROFILE_VAR) or DEFAULT_PROFILE
    profile_from = "--profile" if profile else PROFILE_VAR if env.get(PROFILE_VAR) else None
    named = profile_from is not None
    chosen: dict[str, str] = {}
    url_from: str | None = None
    token_from: str | None = None
    if url:
        url_from = "--url"
    elif env.get(URL_VAR):
        url, url_from = env[URL_VAR], URL_VAR
    if token:
        token_from = "--token"
    elif env.get(TOKEN_VAR):
        token, token_from = env[TOKEN_VAR], TOKEN_VAR
    if url_from is None or token_from is None or named:
        profiles = read_profiles(path)
        if name not in profiles and named and (url_from is None or token_from is None):
            known = ", ".join(sorted(profiles)) or "none yet"
            raise ClientError(
                f"no profile {name!r} in {path} (profiles: {known}); "
                f"create it with: bulkio login --profile {name}"
            )
        chosen = profiles.get(name, {})
    where = f"profile {name!r} of {path}"
    if url_from is None and chosen.get("url"):
        url, url_from = chosen["url"], where
    if token_from is None and chosen.get("token"):
        token, token_from = chosen["token"], where
    if not url or url_from is None:
        raise ClientError(
            f"no server given: pass --url, set {URL_VAR}, or run: bulkio login --url URL"
        )
    return Target(check_url(url, url_from), token or None, name, url_from, token_from, profile_from)


def require_token(target: Target) -> str:
    if not target.token:
        raise NotAllowed(401, f"no API token: pass --token, set {TOKEN_VAR}, or run: bulkio login")
    return target.token
