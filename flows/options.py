"""A job's engine options as the outside world gives them: a dict from a sidecar, the dashboard
or the API, or the Prefect UI's run form. One pydantic model, ``StyleOptions``, made from the
engine's own ``StyleParams`` fields (their types, defaults, help and bounds), so the Prefect UI
shows labelled fields with defaults and bounds and nothing is written twice; ``parse_options``
turns any of those into ``StyleParams`` or refuses them in plain words.

The engine stays free of pydantic: it keeps its dataclass and its own ``validate``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from engine.params import ParamError, StyleParams
from flows.jobs import JobRejected

FIX_OPTIONS = "Fix the options (for an inbox file: its sidecar .json) and submit again"


def _field(f: dataclasses.Field) -> tuple[Any, Any]:
    meta, hint = f.metadata, get_type_hints(StyleParams)[f.name]
    # Bounds are shown (the JSON schema: the Prefect UI's form, whose number inputs refuse a
    # value out of range), not enforced here: StyleParams.validate says what is wrong in the
    # engine's words, for every caller alike.
    bounds = {
        key: meta[name]
        for key, name in (("minimum", "min"), ("maximum", "max"))
        if meta.get(name) is not None
    }
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    title = meta.get("label") or f.name
    return (
        hint,
        Field(
            default,
            title=title,
            description=meta.get("help"),
            json_schema_extra=_form_schema(bounds, optional=type(None) in get_args(hint)),
        ),
    )


def _form_schema(bounds: dict[str, Any], *, optional: bool) -> Callable[[dict[str, Any]], None]:
    """The field's JSON schema as the Prefect UI's run form should render it."""

    def shape(schema: dict[str, Any]) -> None:
        if optional:
            # The form shows "T or null" as a picker of types, preset to null; a plain input
            # left empty means the default (None) as well, and needs no explaining. (The
            # deployment does not enforce its schema: parse_options still takes null.)
            (inner,) = (s for s in schema.pop("anyOf") if s.get("type") != "null")
            schema.update(inner)
            schema.pop("default", None)
        # A list's bounds are its items' (one blend weight per style).
        schema.get("items", schema).update(bounds)

    return shape


StyleOptions: type[BaseModel] = create_model(
    "StyleOptions",
    __config__=ConfigDict(extra="forbid", title="Options"),
    __doc__="Engine options; leave a field at its default unless you mean it.",
    **{f.name: _field(f) for f in dataclasses.fields(StyleParams)},
)


def parse_options(options: Mapping[str, Any] | BaseModel | None, n_styles: int) -> StyleParams:
    """``options`` -> StyleParams, refusing unknown keys, wrong types and values out of range
    with a JobRejected that says which and why."""
    if isinstance(options, BaseModel):
        options = options.model_dump(exclude_unset=True)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise JobRejected(
            f"options must be a mapping of parameter names to values, got {options!r}", FIX_OPTIONS
        )
    try:
        checked = StyleOptions.model_validate(dict(options))
        params = StyleParams(**checked.model_dump())
        params.validate(n_styles)
    except ValidationError as exc:
        raise JobRejected(f"bad parameters: {_words(exc)}", FIX_OPTIONS) from exc
    except ParamError as exc:
        raise JobRejected(f"bad parameters: {exc}", FIX_OPTIONS) from exc
    return params


def _words(exc: ValidationError) -> str:
    unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    if unknown:
        known = ", ".join(f.name for f in dataclasses.fields(StyleParams))
        return f"unknown option(s): {', '.join(unknown)}; known: {known}"
    err = exc.errors()[0]
    name = ".".join(str(p) for p in err["loc"])
    what = err["msg"].replace("Input should be", "must be", 1)
    return f"{name} {what} (got {err['input']!r})"


def style_choice(gallery: Sequence[str]) -> Any:
    """The type of one of the flow's ``styles``, for the Prefect UI's run form: a name picked
    from ``gallery`` or the path or URL of any style image (the API takes either)."""
    if not gallery:
        return str
    return (
        Annotated[Literal[tuple(gallery)], Field(title="Gallery style")]
        | Annotated[str, Field(title="Path or URL")]
    )
