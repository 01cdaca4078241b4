"""Component metadata declared as data.

Every backend lists its properties as `Property` records (name, kind, default,
required, description). The same records validate a Component's `spec.metadata`
at Init, word its error messages (always naming the property), and produce the
reference tables in the README (`secretbridge backends --markdown`), the way
Dapr's components-contrib keeps a metadata.yaml beside each store.

Values are decoded as Dapr decodes them (dapr/kit's metadata decoder), so a YAML written for a
built-in store keeps its meaning after a `type:` change:

- names match case-insensitively;
- booleans are Dapr's truthy strings (`1`, `t`, `true`, `y`, `yes`, `on`, any case) and their
  opposites (`0`, `f`, `false`, `n`, `no`, `off`); other text is refused naming the property (Dapr
  reads it as false, which hides a typo);
- durations are Go durations (`500ms`, `1h30m`) or a bare whole number of seconds (`30`);
- a property with aliases takes the first spelling present in its declaration order (name first,
  then the aliases as listed, which is the order components-contrib lists them); a later
  spelling present as well is ignored with a warning. An empty value counts as not set.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from secretbridge.core.errors import InvalidArgument


class Kind(StrEnum):
    """How a property's string value is read."""

    STRING = "string"
    BOOL = "bool"
    INT = "int"
    DURATION = "duration"
    LIST = "list"


#: Dapr's truthy strings (dapr/kit `strings.IsTruthy`) and the opposites we accept as false.
TRUTHY = frozenset({"1", "t", "true", "y", "yes", "on"})
FALSY = frozenset({"0", "f", "false", "n", "no", "off"})

_BARE_SECONDS = re.compile(r"[+-]?\d+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_bool(text: str) -> bool:
    """Dapr's truthiness, strict: raises ValueError for text that is neither truthy nor falsy."""
    lowered = text.strip().lower()
    if lowered in TRUTHY:
        return True
    if lowered in FALSY:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (`500ms`, `30s`, `5m`, `1h30m`, `0`) or bare seconds (`30`) into seconds."""
    value = text.strip()
    if _BARE_SECONDS.fullmatch(value):
        # As dapr/kit: what Go's ParseDuration refuses is tried as whole seconds.
        return float(int(value))
    pos, total = 0, 0.0
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if match is None:
            raise ValueError(f"not a duration: {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"not a duration: {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds the way the docs and messages write durations."""
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True)
class Property:
    """One metadata property of a backend (or of every backend)."""

    name: str
    description: str
    kind: Kind = Kind.STRING
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    # A sensitive value (a client secret, a password) is never echoed in a message.
    sensitive: bool = False
    minimum: float | None = None
    maximum: float | None = None
    # Extra validation of the parsed value; returns an error text or None.
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)
    #: Set for a property kept for old Components: what to use instead (a warning when it is used).
    deprecated: str = ""

    def parse(self, raw: str) -> Any:
        """Turn the string from the Component YAML into a typed value."""
        shown = "the value given" if self.sensitive else repr(raw)
        text = raw.strip()
        value: Any
        if self.kind is Kind.BOOL:
            try:
                value = parse_bool(text)
            except ValueError:
                raise self._error(
                    f'must be a boolean ("true", "false", or Dapr\'s 1/0, t/f, y/n, yes/no, on/off), got {shown}'
                ) from None
        elif self.kind is Kind.INT:
            try:
                value = int(text)
            except ValueError:
                raise self._error(f"must be a whole number, got {shown}") from None
        elif self.kind is Kind.DURATION:
            try:
                value = parse_duration(text)
            except ValueError:
                raise self._error(
                    f"must be a duration such as 500ms, 30s, 5m or 1h, or a whole number of seconds "
                    f"(0 turns it off), got {shown}"
                ) from None
        elif self.kind is Kind.LIST:
            value = tuple(item.strip() for item in text.split(",") if item.strip())
        else:
            value = raw
            if self.choices:
                match = next((c for c in self.choices if c.lower() == text.lower()), None)
                if match is None:
                    raise self._error(f"must be one of {', '.join(self.choices)}; got {shown}")
                value = match
        if self.minimum is not None and value < self.minimum:
            raise self._error(f"must be at least {self._render(self.minimum)}, got {shown}")
        if self.maximum is not None and value > self.maximum:
            raise self._error(f"must be at most {self._render(self.maximum)}, got {shown}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise self._error(problem)
        return value

    def _render(self, bound: float) -> str:
        return format_duration(bound) if self.kind is Kind.DURATION else f"{bound:g}"

    def _error(self, text: str) -> InvalidArgument:
        return InvalidArgument(f"metadata property '{self.name}' {text}")

    def default_text(self) -> str:
        """The default as a YAML author would write it."""
        if self.default is None:
            return ""
        if self.kind is Kind.BOOL:
            return "true" if self.default else "false"
        if self.kind is Kind.DURATION:
            return format_duration(self.default)
        if self.kind is Kind.LIST:
            return ",".join(self.default)
        return str(self.default)


class MetadataErrors(InvalidArgument):
    """Several problems with one Component's metadata, each as (property, text).

    The message joins them, so Init reports every rule a Component breaks at once;
    `secretbridge check` prints one line per problem.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(text for _, text in self.problems))


@dataclass(frozen=True)
class ParsedMetadata:
    """The typed values, keyed by canonical property name, plus what was not understood."""

    values: dict[str, Any]
    defaulted: frozenset[str]
    unknown: tuple[str, ...]
    suggestions: dict[str, str]
    #: (property, text): spellings ignored because an earlier alias won, deprecated properties used.
    warnings: tuple[tuple[str, str], ...] = ()
    #: Properties given with a value only daprd knows (a `secretKeyRef`): present, value unknown.
    unresolved: frozenset[str] = frozenset()
    #: (property, text) of every problem found, in `collect` mode (else the first one is raised).
    errors: tuple[tuple[str, str], ...] = ()

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def given(self, name: str) -> bool:
        """Whether the Component set this property (rather than it taking its default)."""
        return name in self.unresolved or (name in self.values and name not in self.defaulted)

    def known(self, name: str) -> bool:
        """Whether this property's value can be judged here: not one daprd resolves later, and
        not one that already failed its own check (a rule over it would only repeat that)."""
        return name not in self.unresolved and all(prop != name for prop, _ in self.errors)


def parse_metadata(
    properties: Sequence[Property],
    raw: Mapping[str, str],
    *,
    collect: bool = False,
    unresolved: Iterable[str] = (),
) -> ParsedMetadata:
    """Validate a flat metadata map against `properties`.

    Raises `InvalidArgument` naming the first property that is missing or malformed; with
    `collect`, records every such problem in `errors` instead (a malformed property then takes
    its default, so later rules can still run). Keys in `unresolved` are given but their values
    are unknown (daprd resolves a `secretKeyRef` before Init): their text is not parsed.
    Unknown names are returned (with a close match where there is one) for the
    caller to log: daprd's own metadata may grow, so they are not fatal.
    """
    problems: list[tuple[str, str]] = []

    def problem(prop: str, err: InvalidArgument) -> None:
        if not collect:
            raise err
        problems.append((prop, err.message))

    by_name: dict[str, tuple[Property, int]] = {}
    for prop in properties:
        for rank, spelling in enumerate((prop.name, *prop.aliases)):
            by_name[spelling.lower()] = (prop, rank)
    later = {key.lower() for key in unresolved}
    # Every spelling given, per property: (rank in the declaration, key as written, text).
    given: dict[str, list[tuple[int, str, str]]] = {}
    unknown: list[str] = []
    referenced: set[str] = set()
    for key, text in raw.items():
        found = by_name.get(key.lower())
        if found is None:
            unknown.append(key)
            continue
        prop, rank = found
        spellings = given.setdefault(prop.name, [])
        twin = next((k for r, k, _ in spellings if r == rank), None)
        if twin is not None:
            # The same spelling in two cases: daprd's decoder refuses this too.
            problem(prop.name, InvalidArgument(
                f"metadata property '{prop.name}' is given twice (as '{twin}' and '{key}')"
            ))
            continue
        spellings.append((rank, key, text))
    values: dict[str, Any] = {}
    warnings: list[tuple[str, str]] = []
    by_canonical = {p.name: p for p in properties}
    for name, spellings in given.items():
        prop = by_canonical[name]
        spellings.sort()
        # A spelling daprd resolves later (a secretKeyRef) counts as set, whatever its text here.
        chosen = next(
            ((key, text) for _, key, text in spellings if key.lower() in later or text.strip() != ""), None
        )
        if len(spellings) > 1:
            used = chosen[0] if chosen is not None else spellings[0][1]
            ignored = ", ".join(f"'{key}'" for _, key, _ in spellings if key != used)
            warnings.append((name, (
                f"metadata property '{name}' is given more than once; '{used}' is used and {ignored} "
                "ignored (the first in Dapr's alias order wins)"
            )))
        if prop.deprecated:
            warnings.append((name, f"metadata property '{spellings[0][1]}' is deprecated: {prop.deprecated}"))
        if chosen is None:
            continue  # an empty value means "not set", as in daprd
        if chosen[0].lower() in later:
            referenced.add(name)
            continue
        try:
            values[name] = prop.parse(chosen[1])
        except InvalidArgument as err:
            problem(name, err)
    defaulted = []
    for prop in properties:
        if prop.name in values:
            continue
        if prop.required and prop.name not in referenced:
            problem(prop.name, InvalidArgument(f"metadata property '{prop.name}' is required: {prop.description}"))
        values[prop.name] = prop.default
        defaulted.append(prop.name)
    suggestions = {}
    names = [p.name for p in properties]
    for key in unknown:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
        if close:
            suggestions[key] = close[0]
    return ParsedMetadata(
        values=values,
        defaulted=frozenset(defaulted),
        unknown=tuple(unknown),
        suggestions=suggestions,
        warnings=tuple(warnings),
        unresolved=frozenset(referenced),
        errors=tuple(problems),
    )


def markdown_table(properties: Iterable[Property]) -> str:
    """The reference table for the docs, generated from the declarations."""
    rows = [
        "| property | type | default | required | description |",
        "|---|---|---|---|---|",
    ]
    for prop in properties:
        kind = prop.kind.value
        if prop.choices:
            kind = " \\| ".join(f"`{c}`" for c in prop.choices)
        default = f"`{prop.default_text()}`" if prop.default_text() else ""
        description = prop.description.replace("|", "\\|")  # a bare | would end the cell
        rows.append(
            f"| `{prop.name}` | {kind} | {default} | {'yes' if prop.required else ''} | {description} |"
        )
    return "\n".join(rows)
