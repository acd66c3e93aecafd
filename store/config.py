"""Typed configs: defaults in code, a TOML file, then ``key=value`` overrides.

Unknown keys are rejected with the list of valid ones (as nanoGPT's configurator does), and
the resolved config is written next to whatever it produced.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    pass


def _coerce(raw: str) -> Any:
    """Parse an override value as TOML (numbers, booleans, lists, quoted strings), else keep the text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: not valid TOML ({exc})") from None
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected key=value")
        k, _, v = ov.partition("=")
        data[k.strip()] = _coerce(v.strip())
    known = set(cls.model_fields)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"Unknown config key(s): {', '.join(unknown)}. Valid keys: {', '.join(sorted(known))}")
    try:
        return cls(**data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid config: {msgs}") from None


def save_config(cfg: BaseModel, path: str | Path) -> None:
    Path(path).write_bytes(orjson.dumps(cfg.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
