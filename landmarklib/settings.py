"""One declaration per setting, and the checks every entry point shares.

A Setting is a name, a default, a help line, a kind, and what values it allows (choices, or an
interval such as "(0, 1]"; numbers must also be finite). The run settings (config.RUN) and each
notebook's parameters (notebook.PARAMETERS) are tuples of Settings; the CLI flags and --help, the
defaults, the checks, the run names and the resume check all come from them. `check` turns a
value from anywhere (a CLI flag, papermill -p text, a notebook literal, a config.json) into the
setting's type or raises a ValueError that names the setting and what it allows.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

KINDS = ("bool", "int", "float", "str", "path", "ints", "paths")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
BOOL_WORDS = _TRUE | _FALSE   # how text spells a boolean


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    kind: str = ""               # one of KINDS; "" takes it from the default (bool, int, float, str)
    choices: tuple = ()
    bounds: str = ""             # an interval, "[1, inf)": the allowed numbers (each item, for ints)
    resumable: bool = False      # a resume may change it: it says where things are, not what is computed
    spelled: bool = False        # the run name spells it (the others appear only when not default)
    parse: Callable[[Any], Any] | None = None   # instead of the kind's parsing: text, or an older spelling -> value
    bare: Any = None             # the value of the flag given alone (--pretrained), where it may be

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", {bool: "bool", int: "int", float: "float", str: "str"}[type(self.default)])
        assert self.kind in KINDS, self.kind

    def with_default(self, default: Any) -> "Setting":
        return replace(self, default=default)

    @property
    def optional(self) -> bool:
        """None is a value: 'not given, use what the code works out' (a path, a worker count)."""
        return self.default is None

    def allowed(self) -> str:
        """What the setting takes, for errors and --help."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        what = {"bool": "true or false", "int": "an integer", "float": "a finite number", "str": "text",
                "path": "a path", "ints": "a list of integers", "paths": "a path or a list of paths"}[self.kind]
        return what + (f" in {self.bounds}" if self.bounds else "") + (" or None" if self.optional else "")

    def check(self, value: Any) -> Any:
        """`value` as this setting's type, checked; a ValueError names the setting and what it allows."""
        if value is None or (isinstance(value, str) and value.strip().lower() == "none" and self.optional):
            if self.optional:
                return None
            raise ValueError(f"{self.name}: None is not allowed; it takes {self.allowed()}")
        value = self.parse(value) if self.parse is not None else _as_kind(self, value)
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name}: unknown {self.name} {value!r}; choose one of "
                             f"{', '.join(map(str, self.choices))}")
        for number in value if self.kind == "ints" else [value] if self.kind in ("int", "float") else []:
            if not in_bounds(number, self.bounds):
                raise ValueError(f"{self.name}: {number!r} is out of range; it takes {self.allowed()}")
        return value


def parse_bool(value: Any, name: str = "value") -> bool:
    """True/False, 1/0, or their usual spellings as text (papermill -p passes 'false', which is truthy)."""
    return Setting(name, False, "").check(value)


def _fail(setting: Setting, value: Any):
    raise ValueError(f"{setting.name}: {value!r} is not {setting.allowed()}")


def _as_kind(s: Setting, value: Any) -> Any:
    if s.kind == "bool":
        if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
            return value.strip().lower() in _TRUE
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        _fail(s, value)
    if s.kind == "int":
        return _integer(s, value)
    if s.kind == "float":
        if isinstance(value, bool):
            _fail(s, value)
        try:
            number = float(value)
        except (TypeError, ValueError):
            _fail(s, value)
        if not math.isfinite(number):
            raise ValueError(f"{s.name}: {value!r} is not finite; it takes {s.allowed()}")
        return number
    if s.kind in ("str", "path"):
        if not isinstance(value, str) and not (s.kind == "path" and hasattr(value, "__fspath__")):
            _fail(s, value)
        return str(value)
    if s.kind == "ints":   # 8, [8, 10], "[8, 10]" or "8,10" (papermill -p passes lists as text)
        items = value
        if isinstance(value, str):
            text = value.strip()
            try:
                items = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
            except ValueError:
                _fail(s, value)
        items = items if isinstance(items, (list, tuple)) else [items]
        try:
            return [_integer(s, v) for v in items]
        except ValueError:
            _fail(s, value)
    if s.kind == "paths":   # a path, a list, or a list as text: papermill -p passes '["runs/a", "runs/b"]' as text
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except ValueError:
                _fail(s, value)
        items = [value] if isinstance(value, str) or hasattr(value, "__fspath__") else value
        if not isinstance(items, (list, tuple)) or not items \
                or not all(isinstance(v, str) or hasattr(v, "__fspath__") for v in items):
            _fail(s, value)
        return str(items[0]) if len(items) == 1 and not isinstance(value, (list, tuple)) else [str(v) for v in items]
    raise AssertionError(s.kind)


def _integer(s: Setting, value: Any) -> int:
    """An int from an int, an integral float (papermill's 1e3) or text ("8", "1e3"); nan, inf, 2.5,
    True and "x" are refused."""
    if isinstance(value, bool):
        _fail(s, value)
    if isinstance(value, int):
        return value
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, AttributeError):
        _fail(s, value)
    if not math.isfinite(number) or number != int(number):
        _fail(s, value)
    return int(number)


def interval(bounds: str) -> tuple[float, float, bool, bool]:
    """"(0, 1]" -> (0.0, 1.0, low open, high closed)."""
    low, high = bounds.strip()[1:-1].split(",")
    return float(low), float(high), bounds.strip()[0] == "(", bounds.strip()[-1] == ")"


def in_bounds(number: float, bounds: str) -> bool:
    if not bounds:
        return True
    low, high, low_open, high_open = interval(bounds)
    return (number > low if low_open else number >= low) and (number < high if high_open else number <= high)


def defaults(settings: tuple[Setting, ...]) -> dict:
    return {s.name: s.default for s in settings}


def by_name(settings: tuple[Setting, ...]) -> dict[str, Setting]:
    return {s.name: s for s in settings}


def add_arguments(parser: argparse.ArgumentParser, settings: tuple[Setting, ...]) -> None:
    """One flag per setting: --name-with-dashes, what it allows and its default in the help line.
    A flag not given is absent from the parsed namespace (so a named recipe's value stands), and
    values reach `check` as text: the CLI, papermill and Python refuse a bad value alike."""
    for s in settings:
        flag = "--" + s.name.replace("_", "-")
        text = s.help + (f" [{s.allowed()}]" if s.kind in ("int", "float", "ints") else "") \
            + ("" if s.default is None else f" (default: {s.default})")
        common = {"default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        if s.bare is not None:
            parser.add_argument(flag, nargs="?", const=s.bare, metavar="|".join(map(str, s.choices)), **common)
        elif s.kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif s.kind in ("ints", "paths"):
            parser.add_argument(flag, nargs="*", metavar="EPOCH" if s.kind == "ints" else "PATH", **common)
        else:
            parser.add_argument(flag, metavar="{" + ",".join(map(str, s.choices)) + "}" if s.choices else s.name.upper(),
                                **common)
