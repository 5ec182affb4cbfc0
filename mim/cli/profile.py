"""The active Prefect profile's settings that `mim up` changes (so plain `prefect ...` commands find our server) and
`mim down` puts back: the values before are kept in `.mim/prefect-profile.json` until then."""

from __future__ import annotations

import json
from pathlib import Path

from mim.io import write_text

KEYS = ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")


def _settings() -> dict:
    import prefect.settings as ps

    return {k: getattr(ps, k) for k in KEYS}


def _values(profile) -> dict[str, str | None]:
    return {k: None if (v := profile.settings.get(s)) is None else str(v) for k, s in _settings().items()}


def point(api_url: str, record: Path) -> str:
    """Set the active profile's PREFECT_API_URL to `api_url` (analytics off); remember the values it had, unless a
    previous `mim up` already did (its values are ours, not the user's). Returns the line to print."""
    from prefect.settings.profiles import load_current_profile, update_current_profile

    profile = load_current_profile()
    before = _values(profile)
    settings = _settings()
    after = _values(update_current_profile({settings["PREFECT_API_URL"]: api_url,
                                            settings["PREFECT_SERVER_ANALYTICS_ENABLED"]: False}))
    old = _read(record)
    kept = old["before"] if old and old.get("profile") == profile.name else before
    write_text(str(record), json.dumps({"profile": profile.name, "before": kept, "set": after}, indent=2) + "\n")
    return f"{api_url} (set in the Prefect profile {profile.name!r}; `mim down` puts back its previous value)"


def _read(record: Path) -> dict | None:
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def restore(record: Path) -> str | None:
    """Put back the values `point` replaced, in the profile it changed, where they are still ours (a value the user
    set since is left alone). Returns the line to print, None when `mim up` changed nothing."""
    data = _read(record)
    if data is None:
        return None
    from prefect.settings.profiles import load_profiles, save_profiles

    profiles = load_profiles()
    name = data["profile"]
    if name not in profiles.names:
        record.unlink(missing_ok=True)
        return f"Prefect profile {name!r} no longer exists; nothing to restore"
    now = _values(profiles[name])
    settings = _settings()
    restored = {k: data["before"].get(k) for k in KEYS if now[k] == data["set"].get(k)}
    if restored:
        profiles.update_profile(name, {settings[k]: v for k, v in restored.items()})
        save_profiles(profiles)
    record.unlink(missing_ok=True)
    kept = [k for k in KEYS if k not in restored]
    done = ", ".join(f"{k}={v}" if v is not None else f"{k} unset" for k, v in restored.items()) or "nothing"
    return (f"Prefect profile {name!r}: restored {done}"
            + (f" (left {', '.join(kept)}: changed since `mim up`)" if kept else ""))
