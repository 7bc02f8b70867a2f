"""Typed configs: frozen dataclasses loaded from YAML, with ``--set a.b=c`` overrides.

One way in: :func:`load_config` reads YAML with a ``yaml.SafeLoader``, applies overrides, and builds the
dataclass tree with :func:`from_dict`, which rejects unknown keys (naming the closest valid one) and
values of the wrong type. :func:`dump_config` writes the resolved config next to an output.

The schemas themselves live next to the stage that uses them (e.g. the preprocessing recipe in
``hpcdiff.data.recipe``); this module only knows how to check and convert.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hpcdiff.errors import HpcdiffError
from hpcdiff.fsutil import atomic_file

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-4`` (no dot) as a float, as users write it, and refuses
    aliases: nested anchors and aliases expand exponentially (nine lines make a billion nodes), so a
    config is refused before anything walks or copies its tree."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not supported in hpcdiff configs; write the "
                "values out", event.start_mark)
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE),
    list("-+0123456789."),
)
# ISO dates stay strings (``start: 2001-09-08``): configs hold dates as ``str``, never ``datetime.date``.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_config(cls: type[T], path: Path, *, overrides: Sequence[str] = ()) -> T:
    """Read ``path`` (YAML mapping), apply ``key.sub=value`` overrides, return a ``cls`` instance."""
    path = Path(path)
    data = read_yaml(path)
    data = apply_overrides(data, overrides)
    return from_dict(cls, data, where=str(path))


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; one-line errors for every way this can fail."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise HpcdiffError(f"{path}: no such file") from None
    except OSError as err:
        raise HpcdiffError(f"{path}: cannot read ({err.strerror})") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise HpcdiffError(f"{path}: invalid YAML{at}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HpcdiffError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_versioned_json(path: Path, *, version_key: str, version: int, missing: str,
                        upgrade: str) -> dict[str, Any]:
    """A JSON mapping written by hpcdiff with ``version_key == version``; one-line errors for a missing
    file (``missing``), an unreadable one, and another version (``upgrade`` says what to do)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HpcdiffError(missing) from None
    except (OSError, ValueError) as err:
        raise HpcdiffError(f"{path}: cannot read ({err})") from None
    found = data.get(version_key) if isinstance(data, dict) else None
    if found != version:
        what = version_key.replace("_", " ")
        raise HpcdiffError(f"{path}: {what} {found!r}, this hpcdiff reads {version}; {upgrade}")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` applied; values are parsed as YAML scalars
    or flow collections (``lr=1e-4``, ``years=[1991, 1992]``, ``name=null``)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise HpcdiffError(f"--set {item!r}: expected key.sub=value")
        try:
            value = _yaml_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            raise HpcdiffError(f"--set {item!r}: value is not valid YAML") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise HpcdiffError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def from_dict(cls: type[T], data: Any, *, where: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursively; ``where`` names the source in errors."""
    if not isinstance(data, Mapping):
        raise HpcdiffError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            hint = _suggest(str(key), fields, prefix)
            raise HpcdiffError(f"{where}: unknown key {prefix + str(key)!r}{hint}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where=where, key=prefix + name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise HpcdiffError(f"{where}: missing required key {prefix + name!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise HpcdiffError(f"{where}: {prefix.rstrip('.') or cls.__name__}: {err}") from None


def _suggest(key: str, valid: Mapping[str, Any], prefix: str) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    if close:
        return f"; did you mean {prefix + close[0]!r}?"
    return f"; valid keys: {', '.join(sorted(valid))}"


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _convert(tp: Any, value: Any, *, where: str, key: str) -> Any:
    """Check ``value`` against type hint ``tp`` and convert containers; raise a one-line error."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where, prefix=key + ".")
    if origin in (typing.Union, types.UnionType):
        return _convert_union(args, value, where=where, key=key)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise HpcdiffError(f"{where}: {key} must be one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence):
        return _convert_sequence(tp, value, where=where, key=key)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise HpcdiffError(f"{where}: {key} must be a mapping, got {_kind(value)}")
        vt = args[1] if args else Any
        return {str(k): _convert(vt, v, where=where, key=f"{key}.{k}") for k, v in value.items()}
    return _convert_scalar(tp, value, where=where, key=key)


def _convert_union(args: tuple[Any, ...], value: Any, *, where: str, key: str) -> Any:
    if value is None and type(None) in args:
        return None
    candidates = [a for a in args if a is not type(None)]
    if len(candidates) == 1:  # an optional value: its own error (e.g. a misspelt key inside a section)
        return _convert(candidates[0], value, where=where, key=key)
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, where=where, key=key)
        except HpcdiffError as err:
            errors.append(str(err))
    names = " or ".join(_type_name(a) for a in args)
    raise HpcdiffError(f"{where}: {key} must be {names}, got {_kind(value)} {value!r}")


def _convert_sequence(tp: Any, value: Any, *, where: str, key: str) -> Any:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise HpcdiffError(f"{where}: {key} must be a list, got {_kind(value)} {value!r}")
    args = typing.get_args(tp)
    item_tp = args[0] if args else Any
    items = [_convert(item_tp, v, where=where, key=f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(tp) is tuple else items


def _convert_scalar(tp: Any, value: Any, *, where: str, key: str) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, (str, Path)),
    }
    if tp not in ok:
        raise TypeError(f"config type {tp!r} for {key} is not supported")
    if not ok[tp]:
        raise HpcdiffError(f"{where}: {key} must be {_type_name(tp)}, got {_kind(value)} {value!r}")
    return tp(value)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def sides(value: int | Sequence[int] | None, *, name: str, minimum: int = 8) -> tuple[int, int] | None:
    """A config's window size, ``N`` (square) or ``[h, w]``, as ``(h, w)`` (``None`` stays ``None``);
    ``ValueError`` naming ``name`` when it is not two sides of at least ``minimum``."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) < minimum:
        raise ValueError(f"{name} must be an integer or [h, w] of at least {minimum}, or null; got "
                         f"{list(value) if not isinstance(value, int) else value}")
    return pair


def to_dict(cfg: Any) -> Any:
    """Plain YAML-able view of a config tree (dataclasses → dicts, tuples → lists, paths → str)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def dump_config(cfg: Any, path: Path) -> Path:
    """Write the resolved config as YAML, atomically; returns ``path``."""
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
