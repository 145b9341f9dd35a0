"""Settings read their `SPARKDOCS_*` variables exactly as pydantic-settings' BaseSettings reads
them: the judge is a BaseSettings model built here from Settings' own fields, over generated
environments (names in any case, valid and invalid text, unrelated variables)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, ValidationError, create_model
from pydantic_core import ValidationError as CoreValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from sparkdocs import config
from sparkdocs.config import (
    ENV_PREFIX,
    AuthMode,
    CacheIsolation,
    Settings,
    build_settings,
    child_environment,
)
from sparkdocs.errors import ConfigError


def _judge_model() -> type[BaseSettings]:
    """A pydantic-settings model of Settings' own fields: their types, defaults and bounds."""
    from dataclasses import MISSING, fields
    from typing import get_type_hints

    types = get_type_hints(Settings, globalns=vars(config))
    specs = {}
    for spec in fields(Settings):
        if not spec.init:
            continue
        bounds = {k: spec.metadata[k] for k in ("ge", "gt", "le") if spec.metadata.get(k) is not None}
        default = (Field(default_factory=spec.default_factory, **bounds)
                   if spec.default_factory is not MISSING else Field(spec.default, **bounds))
        specs[spec.name] = (_home_expanded(types[spec.name]), default)
    class Base(BaseSettings):
        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True,
                                          frozen=True, extra="ignore", allow_inf_nan=False)

    return create_model("Judge", __base__=Base, **specs)  # type: ignore[call-overload]


def _home_expanded(kind: Any) -> Any:
    """Paths as Settings documents them: `~` is the home folder (pydantic's own validator
    hook, so the judge still parses every value itself)."""
    from typing import Annotated

    from pydantic import AfterValidator

    expanded = Annotated[Path, AfterValidator(Path.expanduser)]
    return {Path: expanded, Path | None: expanded | None}.get(kind, kind)


Judge = _judge_model()
FIELDS = sorted(f.name for f in dataclasses.fields(Settings) if f.init)
TEXTS = st.one_of(
    st.sampled_from(["", "0", "1", "-3", "512", "65536", "1e3", "2.5", "true", "False", "yes",
                     "off", "none", "null", "inf", "-inf", "99999999999999999999", "1e300", "password", "proxy", "user", "shared", "auto", "md",
                     "jsonl", "/tmp/x", " 7 ", "http://h:1/v1", "1_000", "nan", "inf", "~/x", "~",
                     "~root/x", "a/~"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
            max_size=12))


# what callers pass as keywords: text, numbers of each kind, flags, paths, enum members, None
KWARG_VALUES = st.one_of(
    TEXTS, st.integers(-2, 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.just(Path("/tmp/c")), st.sampled_from(list(AuthMode)),
    st.sampled_from(list(CacheIsolation)), st.just(b"bytes"), st.just([1]))


def _name(field: str, case: str) -> str:
    name = ENV_PREFIX + field.upper()
    return {"upper": name, "lower": name.lower(), "mixed": name[:1].lower() + name[1:],
            # letters whose case maps outside ASCII: a long s, a Kelvin sign, a dotted I
            "long s": "\u017f" + name[1:].lower(), "kelvin": name.replace("K", "\u212a"),
            "dotted": name.replace("I", "\u0130")}[case]


ENVIRONMENTS = st.lists(
    st.tuples(st.sampled_from([*FIELDS, "not_a_setting", "BASE"]),
              st.sampled_from(["upper", "lower", "mixed", "long s", "kelvin", "dotted"]), TEXTS),
    max_size=6)


def _outcome(model: Any, kwargs: dict[str, Any]) -> tuple[str, Any]:
    try:
        made = model(**kwargs)
        return "ok", made.as_dict() if isinstance(made, Settings) else made.model_dump()
    except (ValidationError, CoreValidationError) as exc:
        return "invalid", sorted((e["loc"], e["type"]) for e in exc.errors())


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=ENVIRONMENTS,
       kwargs=st.dictionaries(st.sampled_from([*FIELDS, "not_a_setting"]), KWARG_VALUES, max_size=3))
def test_environment_read_as_pydantic_settings_reads_it(entries, kwargs) -> None:
    environ = _clean_environ()
    for field, case, text in entries:
        environ[_name(field, case)] = text
    with mock.patch.dict(os.environ, environ, clear=True):
        ours, judged = _outcome(Settings, kwargs), _outcome(Judge, kwargs)
    assert ours == judged


def test_an_invalid_variable_is_one_line_that_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKDOCS_CONTEXT_LENGTH", "lots")
    with pytest.raises(ConfigError, match=r"SPARKDOCS_CONTEXT_LENGTH='lots' is not valid.*"
                                          r"set SPARKDOCS_CONTEXT_LENGTH to a whole number of at least 512"):
        build_settings()
    assert build_settings(overrides={"context_length": 8192}).context_length == 8192


def test_a_child_rebuilds_the_same_settings(tmp_path: Path) -> None:
    """The app's server process gets every setting as a variable and must build equal ones."""
    with mock.patch.dict(os.environ, _clean_environ(), clear=True):
        given_settings = Settings(cache_dir=tmp_path, context_length=8192, auth="password",
                                  local_model_log=tmp_path / "log", warm_up=False)
        child = {k: v for k, v in child_environment(given_settings).items()
                 if k.startswith(ENV_PREFIX)}
    with mock.patch.dict(os.environ, {**_clean_environ(), **child}, clear=True):
        assert Settings() == given_settings
        assert Judge().model_dump() == given_settings.as_dict()


@pytest.mark.parametrize("value,home,reason", [
    ("~nouser-sparkdocs/x", "/root", "~ names no user's home folder"),
    ("~/x", "", "~ is no folder while HOME is empty"),
    ("~", "", "~ is no folder while HOME is empty"),
])
def test_a_path_of_no_home_is_one_line_that_names_it(monkeypatch: pytest.MonkeyPatch, value,
                                                      home, reason) -> None:
    monkeypatch.setenv("HOME", home)
    monkeypatch.setenv("SPARKDOCS_CACHE_DIR", value)
    with pytest.raises(ConfigError, match=rf"SPARKDOCS_CACHE_DIR='{value}' is not valid \({reason}\)"):
        build_settings()
