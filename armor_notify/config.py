"""Loading the config file (SPEC §2): YAML, ``${VAR}`` interpolation, and validation that reports
every problem at once, each with the file, the line, the path inside the file and a suggestion."""

from __future__ import annotations

import os
import re
import stat
import types
import typing
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from .alert import Alert
from .dedup import rule_slug
from .delivery import Delivery, State
from .destinations import DestinationConfig, DestinationType, RateLimit
from .durations import Base60, Duration, DurationOrZero, format_duration
from .errors import ConfigError, Problem
from .matching import OWNERS, Router, Rule
from .noise import Blackout, check_blackouts, valid_zone
from .registry import Registry
from .rules import RuleModel
from .secrets import Secret, SecretUrl, redact
from .validation import Loc, StrictModel, format_loc, suggest

CONFIG_ENV = "ARMOR_NOTIFY_CONFIG"
DEFAULT_CONFIG = "armor-notify.yaml"

_VAR = re.compile(r"\$(\$)?\{([^}]*)\}")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

MAX_CONFIG_BYTES = 1024 * 1024
"""The largest config file read (1 MiB)."""
MAX_CONFIG_DEPTH = 50
"""The deepest nesting of mappings and lists in a config, aliases expanded."""
MAX_CONFIG_VALUES = 100_000
"""The most keys and values a config may hold, aliases expanded (a "billion laughs" guard)."""
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Defaults(StrictModel):
    """Values shared by every destination."""

    source: Annotated[str, Field(min_length=1, max_length=255)] = "anomalyarmor"
    """PagerDuty's ``payload.source`` and the product name in messages."""
    link_text: Annotated[str, Field(min_length=1, max_length=200)] = "View in AnomalyArmor"
    """The text of the link to the alert."""
    timezone: Annotated[str, BeforeValidator(valid_zone)] = "UTC"
    """The company time zone: daily limits reset at its midnight; blackouts default to it."""
    repeat_window: DurationOrZero = 600.0
    """Seconds during which the same alert (id and status) is accepted only once per destination."""


POSTGRES_SCHEMES = ("postgresql", "postgres")
DEFAULT_RETENTION = 30 * 86400.0


def _postgres_url(value: SecretUrl | None) -> SecretUrl | None:
    if value is not None:
        scheme = value.get_secret_value().split("://", 1)[0].lower()
        if scheme not in POSTGRES_SCHEMES:
            raise ValueError("must be a postgresql:// URL (the SQLite outbox is chosen with "
                             "--state-dir or $ARMOR_NOTIFY_STATE_DIR, not here)")
    return value


class StateSettings(StrictModel):
    """``state:``: where the outbox lives, and how long finished deliveries are kept."""

    url: Annotated[SecretUrl | None, AfterValidator(_postgres_url)] = None
    """``postgresql://user:${PGPASSWORD}@host/db``: one outbox shared by every worker on every
    machine; unset, the SQLite file in the state directory."""
    retention: Duration = DEFAULT_RETENTION
    """Finished deliveries older than this are removed by ``armor-notify worker``."""


MAX_BODY = 16 * 1024 * 1024


class SignatureSettings(StrictModel):
    """How ``serve`` checks that a source's producer signed the body (HMAC-SHA256)."""

    secret: Annotated[Secret, Field(min_length=16)]
    """The shared secret (``${VAR}``); at least 16 characters."""
    header: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$")] = (
        "X-Armor-Signature-256")
    """The header holding the signature: the body's HMAC-SHA256 in hex, ``sha256=`` allowed."""


class ServeSettings(StrictModel):
    """``serve:``: the HTTP intake service's tokens and limits."""

    tokens: list[Annotated[Secret, Field(min_length=16)]] = Field(default_factory=list)
    """Bearer tokens that may post alerts and use the status page (``${VAR}``), besides those in
    ``$ARMOR_NOTIFY_API_TOKENS``."""
    max_body: Annotated[int, Field(ge=1024, le=1024**3)] = MAX_BODY
    """The largest request body, in bytes (413 above it)."""
    max_backlog: Annotated[int, Field(ge=1)] = 100_000
    """Queued deliveries above which intake answers 429 (Retry-After) instead of accepting."""
    signatures: dict[str, SignatureSettings] = Field(default_factory=dict)
    """Per source name: the signature ``POST /v1/sources/{name}`` must carry."""


class CheckSettings(StrictModel):
    """``checks:``: how check results (alerts with a ``check``) are judged."""

    resolve_after: Annotated[int, Field(ge=1, le=100)] = 1
    """Consecutive passes before a failing check's incident resolves (a rule may ask more)."""
    errors: Literal["fail", "ignore"] = "fail"
    """A check that could not run (``error``): a failure, or recorded as a run and nothing else."""


def _paths(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class LineageSettings(StrictModel):
    """``lineage:``: where the graph of assets comes from, and how far root causes are looked
    for (paths relative to the config file)."""

    dbt_manifest: Annotated[str, Field(min_length=1)] | None = None
    """A dbt ``manifest.json``: its models, seeds, snapshots, sources and ``parent_map``."""
    edges: Annotated[tuple[Annotated[str, Field(min_length=1)], ...],
                     BeforeValidator(_paths)] = ()
    """Edges files (JSON or YAML): ``[{from, to}]`` or OpenLineage events."""
    depth: Annotated[int, Field(ge=1, le=100)] = 10
    """How many steps upstream a root cause is looked for."""
    window: Duration = 86400.0
    """A failure upstream counts as the root cause if it began at most this long before."""
    grace: DurationOrZero = 600.0
    """After a root cause resolves, how long its children may take to recover before those
    still failing page on their own."""


class ConfigFile(StrictModel):
    """The file's top level; destinations are validated by their own types afterwards."""

    model_config = ConfigDict(frozen=False)

    version: Literal[1]
    defaults: Defaults = Defaults()
    destinations: dict[Any, Any]  # names are checked one by one, with their own messages
    rules: list[RuleModel] = Field(default_factory=list)
    blackouts: list[Blackout] = Field(default_factory=list)
    state: StateSettings = StateSettings()
    serve: ServeSettings = ServeSettings()
    checks: CheckSettings = CheckSettings()
    lineage: LineageSettings = LineageSettings()
    owners: dict[Annotated[str, Field(min_length=1, max_length=255)],
                 Annotated[tuple[Annotated[str, Field(min_length=1)], ...],
                           BeforeValidator(_paths), Field(min_length=1)]] = Field(
        default_factory=dict)
    """Owner or team (``asset.owners``) → destinations, and ``fallback:`` for owners not
    listed; rules send there by listing ``owners`` among their destinations."""


OWNER_FALLBACK = "fallback"


@dataclass(frozen=True)
class Destination:
    """One configured destination: its name, its type and its validated config."""

    name: str
    type: DestinationType
    config: DestinationConfig

    @property
    def send_resolved(self) -> bool:
        if self.config.send_resolved is None:
            return self.type.send_resolved_default
        return self.config.send_resolved

    @property
    def rate_limit(self) -> RateLimit | None:
        text = self.config.rate_limit
        return RateLimit.parse(self.type.default_rate_limit if text == "default" else text,
                               self.config.rate_burst)

    def describe(self) -> str:
        return self.config.describe() or self.type.title


@dataclass(frozen=True)
class Config:
    """A validated config: defaults, destinations by name, compiled rules and their router."""

    path: str
    defaults: Defaults
    destinations: Mapping[str, Destination]
    rules: tuple[Rule, ...]
    router: Router
    blackouts: tuple[Blackout, ...] = ()
    state: StateSettings = field(default_factory=StateSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    checks: CheckSettings = field(default_factory=CheckSettings)
    lineage: LineageSettings = field(default_factory=LineageSettings)
    owners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Owner → destinations, ``fallback`` included (``owners:``)."""

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def lineage_paths(self) -> tuple[Path | None, tuple[Path, ...]]:
        """The lineage files, relative to the config file's directory."""
        base = Path(self.path).parent if Path(self.path).exists() else Path.cwd()
        manifest = self.lineage.dbt_manifest
        return (base / manifest if manifest else None,
                tuple(base / p for p in self.lineage.edges))

    def plan(self, alerts: Iterable[Alert]) -> list[Delivery]:
        """One delivery per (alert, routed destination), as ``send`` would write them; those
        that would not be sent are final at once (suppressed: another destination has the same
        target, or ``send_resolved`` is off for the alert's status)."""
        deliveries = []
        for alert in alerts:
            targets: dict[tuple[str, str], str] = {}
            for route in self.router.route(alert):
                dest = self.destinations[route.destination]
                delivery = Delivery(
                    alert=alert,
                    destination=dest.name,
                    destination_type=dest.type.name,
                    rule=route.rule,
                    dedup_key=route.dedup_key,
                    also_matched=route.also_matched,
                )
                target = dest.config.target_key()
                first = targets.setdefault((dest.type.name, target), dest.name) if target else None
                if first is not None and first != dest.name:
                    delivery.finish(State.suppressed,
                                    f"'{first}' sends to the same {dest.type.title} target and "
                                    "already delivers this alert")
                elif alert.status != "triggered" and not dest.send_resolved:
                    delivery.finish(State.suppressed,
                                    f"send_resolved is off for this destination "
                                    f"({alert.status} alerts are not sent)")
                deliveries.append(delivery)
        return deliveries


def find_config(path: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$ARMOR_NOTIFY_CONFIG``, else ``./armor-notify.yaml``."""
    if path:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return Path(DEFAULT_CONFIG)


def load_config(path: str | os.PathLike[str] | None, registry: Registry) -> Config:
    """Read, interpolate and validate a config file; raise :class:`ConfigError` listing every problem."""
    file = find_config(path)
    name = str(file)
    try:
        text = _read_config(file)
    except FileNotFoundError:
        hint = "" if path else f" (pass --config PATH or set {CONFIG_ENV})"
        raise ConfigError([Problem(name, "", f"config file not found{hint}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(name, "", f"cannot read the config file: {exc}")]) from None
    return parse_config(text, registry, source=name)


def read_state_settings(path: str | os.PathLike[str] | None, *,
                        environ: Mapping[str, str] | None = None) -> StateSettings:
    """The config file's ``state:`` section alone, for commands that need only the outbox
    (``outbox``, ``db``): the rest of the file is not validated. No file where none was asked
    for (no ``--config``, no ``$ARMOR_NOTIFY_CONFIG``) means the defaults."""
    file = find_config(path)
    name = str(file)
    explicit = bool(path or os.environ.get(CONFIG_ENV))
    try:
        text = _read_config(file)
    except FileNotFoundError:
        if not explicit:
            return StateSettings()
        raise ConfigError([Problem(name, "", "config file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(name, "", f"cannot read the config file: {exc}")]) from None
    data, layout = _load_yaml(text, name)
    validator = _Validator(name, layout, Registry(), os.environ if environ is None else environ)
    section = data.get("state") if isinstance(data, dict) else None
    settings = StateSettings()
    if section is not None:
        section = validator.interpolate(section, ("state",))
        try:
            settings = StateSettings.model_validate(section)
        except ValidationError as exc:
            validator.pydantic_problems(exc, StateSettings, ("state",))
    if validator.problems:
        raise ConfigError(validator.problems)
    return settings


def _read_config(file: Path) -> str:
    """The file's text: a regular file of at most :data:`MAX_CONFIG_BYTES`. Opened without
    blocking, so a named pipe or a device (``/dev/zero``) is refused instead of read forever."""
    fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise ConfigError([Problem(str(file), "", "cannot read the config file: not a regular "
                                                  "file")])
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(str(file), "", _too_large())])
    return data.decode("utf-8")


def _too_large() -> str:
    return f"the config file is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB"


def parse_config(
    text: str,
    registry: Registry,
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate config text (YAML). ``environ`` defaults to the process environment."""
    data, layout = _load_yaml(text, source)
    validator = _Validator(source, layout, registry, os.environ if environ is None else environ)
    for loc, line, first in layout.duplicates:
        validator.problem(loc, f"'{loc[-1]}' is defined twice (first on line {first}); "
                               "YAML would silently keep only the last one", line=line)
    return validator.validate(data)


def config_from_dict(data: Mapping[str, Any], registry: Registry, *,
                     source: str = "<dict>") -> Config:
    """Validate an already-parsed config mapping (for embedding and tests)."""
    return _Validator(source, _Layout({}, [], {}), registry, os.environ).validate(dict(data))


@dataclass
class _Layout:
    """Where things are in the YAML text: lines by path, duplicate keys, original key text."""

    lines: dict[Loc, int]
    duplicates: list[tuple[Loc, int, int]]
    """(path, line of the repeat, line of the first definition)."""
    key_text: dict[tuple[Any, ...], str]
    """For keys YAML reads as non-strings (``off:``, ``null:``): path with the value → the text."""
    starts: dict[Loc, int] = field(default_factory=dict)
    """For text values: the line their text starts on (a ``|`` block's is the next line), so
    that a line inside a value (a template's) can be told as a line of the file."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: nesting deeper than :data:`MAX_CONFIG_DEPTH` stops the
    parse where it happens (before recursion or slow scanning), and base-60 numbers such as an
    unquoted ``17:30`` keep their text (:class:`Base60`) for the error message."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_CONFIG_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _Refused(f"nested too deeply (more than {MAX_CONFIG_DEPTH} levels)",
                               event.start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_base60(self, node: yaml.ScalarNode) -> Any:
        value = self.construct_yaml_int(node)
        return Base60(value, node.value) if ":" in node.value else value


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_base60)


class _Refused(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        self.message = message
        self.line = line


def _load_yaml(text: str, source: str) -> tuple[Any, _Layout]:
    """The YAML's data and its layout; :class:`ConfigError` for text that is not
    valid YAML or goes past a bound (size, nesting, alias expansion, recursive aliases)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(source, "", _too_large())])
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        where = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError([Problem(source, "", f"not valid YAML: the character U+{char:04X} is "
                                               "not allowed in a YAML file", where)]) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node)
        layout = _layout(node, loader)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(source, "", f"not valid YAML: {problem}", line)]) from None
    except _Refused as refused:
        raise ConfigError([Problem(source, "", refused.message, refused.line)]) from None
    except RecursionError:  # a last guard: the bounds above keep recursion shallow
        raise ConfigError([Problem(source, "", "nested too deeply")]) from None
    finally:
        loader.dispose()
    return data, layout


def _check_expansion(root: yaml.Node) -> None:
    """Refuse aliases that make the config recursive, deeper than :data:`MAX_CONFIG_DEPTH` or
    larger than :data:`MAX_CONFIG_VALUES` once expanded. Each node is measured once, so nine
    levels of nine aliases ("billion laughs") cost 81 steps, not 9**9."""
    measured: dict[int, tuple[int, int]] = {}  # node → (values, height), aliases expanded
    active: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        line = node.start_mark.line + 1
        known = measured.get(id(node))
        if known is None:
            if id(node) in active:
                raise _Refused("an alias (*name) is used inside the collection it names: "
                               "recursive structures are not allowed", line)
            if depth > MAX_CONFIG_DEPTH:
                raise _Refused(f"nested too deeply (more than {MAX_CONFIG_DEPTH} levels, "
                               "aliases expanded)", line)
            children: list[yaml.Node] = []
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            active.add(id(node))
            size, height = 1, 0
            for child in children:
                child_size, child_height = measure(child, depth + 1)
                size += child_size
                height = max(height, child_height + 1)
                if size > MAX_CONFIG_VALUES:
                    raise _Refused(f"the config holds more than {MAX_CONFIG_VALUES:,} values "
                                   "once its aliases (*name) are expanded; refusing it", line)
            active.discard(id(node))
            known = measured[id(node)] = (size, height)
        if depth + known[1] > MAX_CONFIG_DEPTH:
            raise _Refused(f"nested too deeply (more than {MAX_CONFIG_DEPTH} levels, aliases "
                           "expanded)", line)
        return known

    measure(root, 0)


def _merged_pairs(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """The pairs a mapping's merge keys (``<<: *base``, ``<<: [*a, *b]``) bring in that its own
    keys do not set; an earlier mapping in a merge list wins over a later one."""
    own = {k.value for k, _ in node.value
           if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG}
    out: list[tuple[yaml.Node, yaml.Node]] = []
    seen = set(own)
    for key, value in node.value:
        if key.tag != _MERGE_TAG:
            continue
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise _Refused("a merge key (<<) takes a mapping, usually an alias such as "
                               "<<: *base, or a list of them", source.start_mark.line + 1)
            for pair in _effective_pairs(source):
                text = pair[0].value if isinstance(pair[0], yaml.ScalarNode) else None
                if text is None or text not in seen:
                    seen.add(text)
                    out.append(pair)
    return out


def _effective_pairs(node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
    """A mapping's pairs as they read: merged pairs first, then its own (which win)."""
    own = [(k, v) for k, v in node.value if k.tag != _MERGE_TAG]
    return _merged_pairs(node) + own if len(own) != len(node.value) else own


def _layout(node: yaml.Node | None, loader: _Loader) -> _Layout:
    """Lines, duplicate keys and key texts; merge keys are resolved here (each mapping's pairs
    replaced by the pairs it reads as), so every merged key has the line it is written on."""
    layout = _Layout({}, [], {})
    flattened: set[int] = set()

    def walk(n: yaml.Node, loc: Loc) -> None:
        layout.lines.setdefault(loc, n.start_mark.line + 1)
        if isinstance(n, yaml.ScalarNode):
            layout.starts[loc] = n.start_mark.line + (2 if n.style in ("|", ">") else 1)
        if isinstance(n, yaml.MappingNode):
            merged = _merged_pairs(n) if id(n) not in flattened else []
            first: dict[str, int] = {}
            for key, value in n.value:
                if key.tag == _MERGE_TAG:
                    continue
                text = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                line = key.start_mark.line + 1
                if text in first:
                    layout.duplicates.append(((*loc, text), line, first[text]))
                    continue
                first[text] = line
                _remember_key_text(layout, loc, key, text, loader)
                layout.lines[(*loc, text)] = line
                walk(value, (*loc, text))
                layout.lines[(*loc, text)] = line
            for key, value in merged:
                text = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                _remember_key_text(layout, loc, key, text, loader)
                layout.lines[(*loc, text)] = key.start_mark.line + 1
                walk(value, (*loc, text))
                layout.lines[(*loc, text)] = key.start_mark.line + 1
            if id(n) not in flattened:  # PyYAML then finds no merge key left to resolve
                flattened.add(id(n))
                n.value = merged + [(k, v) for k, v in n.value if k.tag != _MERGE_TAG]
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*loc, i))

    if node is not None:
        walk(node, ())
    return layout


def _remember_key_text(layout: _Layout, loc: Loc, key: yaml.Node, text: str,
                       loader: _Loader) -> None:
    """For keys YAML reads as non-strings (``off:``, ``null:``, ``1:``)."""
    if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:str":
        try:
            value_key = loader.construct_object(key) if text else None
        except yaml.YAMLError:  # reported when the document is constructed
            return
        if isinstance(value_key, Hashable):
            layout.key_text[(*loc, value_key)] = text


def _model_at(model: Any, loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (to suggest valid keys)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = [a for a in typing.get_args(current) if a is not Ellipsis]
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            if field is None:
                field = next((f for f in current.model_fields.values() if f.alias == part), None)
            current = field.annotation if field else None
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            candidates = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else candidates[0]
        else:
            return tp


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


class _Validator:
    def __init__(self, source: str, layout: _Layout, registry: Registry,
                 environ: Mapping[str, str]) -> None:
        self.source = source
        self.lines = layout.lines
        self.starts = layout.starts
        self.key_text = layout.key_text
        self.interpolated: set[str] = set()
        self.registry = registry
        self.environ = environ
        self.problems: list[Problem] = []

    def problem(self, loc: Loc, message: str, *, line: int | None = None) -> None:
        if line is None:
            for cut in range(len(loc), -1, -1):
                if loc[:cut] in self.lines:
                    line = self.lines[loc[:cut]]
                    break
        # Values that came from the environment may be secrets: never echo them.
        message = redact(message, sorted(self.interpolated))
        self.problems.append(Problem(self.source, format_loc(loc), message, line))

    def pydantic_problems(self, exc: ValidationError, model: Any, prefix: Loc = ()) -> None:
        for err in exc.errors(include_input=False, include_url=False):
            loc = tuple(err["loc"])
            kind = err["type"]
            if kind == "extra_forbidden":
                owner = _model_at(model, loc[:-1])
                choices = _field_names(owner) if owner else []
                key = str(loc[-1])
                known = f"; valid keys: {', '.join(choices)}" if choices else ""
                message = f"unknown key '{key}'{suggest(key, choices)}{known}"
            elif kind == "missing":
                message = f"missing required key '{loc[-1]}'"
            elif kind == "literal_error" and loc and loc[-1] == "version":
                message = "unsupported config version: write `version: 1`"
            else:
                message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            # A template's own line, as a line of the file (when the file is where it came from).
            inner = getattr(err.get("ctx", {}).get("error"), "line", None)
            start = self.starts.get(prefix + loc)
            line = start + inner - 1 if isinstance(inner, int) and start is not None else None
            self.problem(prefix + loc, message, line=line)

    # -- ${VAR} ---------------------------------------------------------------------------------
    def interpolate(self, value: Any, loc: Loc) -> Any:
        if isinstance(value, dict):
            return {k: self.interpolate(v, (*loc, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, (*loc, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            if match.group(1):  # $${NAME} is a literal ${NAME}
                return "${" + match.group(2) + "}"
            var = match.group(2)
            if not _VAR_NAME.match(var):
                self.problem(loc, f"'${{{var}}}' is not a valid environment variable reference")
                return ""
            if var not in self.environ:
                self.problem(loc, f"environment variable {var} is not set "
                                  f"(export {var}=... before running armor-notify)")
                return ""
            if self.environ[var] == "":
                self.problem(loc, f"environment variable {var} is set but empty")
            elif len(self.environ[var]) >= 4:
                self.interpolated.add(self.environ[var])
            return self.environ[var]

        return _VAR.sub(replace, value)

    # -- the whole file -------------------------------------------------------------------------
    def validate(self, data: Any) -> Config:
        if not isinstance(data, dict):
            self.problem((), "the config must be a mapping with version, destinations and rules")
            raise ConfigError(self.problems)
        data = self.interpolate(data, ())
        top: ConfigFile | None = None
        try:
            top = ConfigFile.model_validate(data)
        except ValidationError as exc:
            self.pydantic_problems(exc, ConfigFile)
        for index, message in check_blackouts(self.valid_blackouts(top, data)):
            self.problem(("blackouts", index), message)
        raw_destinations = data.get("destinations")
        destinations = (
            self.destinations(raw_destinations) if isinstance(raw_destinations, dict) else {}
        )
        raw_rules = data.get("rules")
        names = set(raw_destinations) if isinstance(raw_destinations, dict) else set()
        raw_owners = data.get("owners")
        self.check_owners(raw_owners if isinstance(raw_owners, dict) else {}, names)
        self.check_rules(raw_rules if isinstance(raw_rules, list) else [],
                         names | ({OWNERS} if isinstance(raw_owners, dict) and raw_owners
                                  else set()))
        if top is not None:
            self.check_retention(top)
        if self.problems or top is None:
            raise ConfigError(self.problems)
        compiled = tuple(Rule.compile(i, r) for i, r in enumerate(top.rules))
        mapped = {k: v for k, v in top.owners.items() if k != OWNER_FALLBACK}
        router = Router(compiled, mapped, top.owners.get(OWNER_FALLBACK, ()))
        return Config(self.source, top.defaults, destinations, compiled, router,
                      tuple(top.blackouts), top.state, top.serve, top.checks, top.lineage,
                      dict(top.owners))

    def check_retention(self, top: ConfigFile) -> None:
        """Finished deliveries are the memory of noise control and of the repeat window: they
        must be kept at least as long as any of those look back."""
        needs = [(86400.0, "a day (daily limits count a day of deliveries)"),
                 (top.defaults.repeat_window, "defaults.repeat_window")]
        needs += [(r.cooldown, f"the cooldown of rule '{r.name}'") for r in top.rules
                  if r.cooldown is not None]
        longest, what = max(needs, key=lambda need: need[0])
        if top.state.retention < longest:
            self.problem(("state", "retention"),
                         f"{format_duration(top.state.retention)} is shorter than {what} "
                         f"({format_duration(longest)}): deliveries it looks back on would be "
                         "removed first")

    @staticmethod
    def valid_blackouts(top: ConfigFile | None, data: dict[str, Any]) -> list[Blackout]:
        """The blackouts, even when another part of the file is invalid (so that overlaps are
        reported in the same run); none if the blackouts themselves are invalid."""
        if top is not None:
            return top.blackouts
        try:
            return TypeAdapter(list[Blackout]).validate_python(data.get("blackouts") or [])
        except ValidationError:
            return []

    def destinations(self, raw: dict[str, Any]) -> dict[str, Destination]:
        out: dict[str, Destination] = {}
        for name, spec in raw.items():
            loc: Loc = ("destinations", self.key_text.get(("destinations", name), str(name)))
            if not isinstance(name, str):
                self.problem(loc, "put this destination's name in quotes: YAML reads "
                                  "on/off/yes/no/true/false/null and numbers as values, not names")
                continue
            if not _DEST_NAME.match(name):
                self.problem(loc, "destination names use letters, digits, '-', '_' and '.' only")
                continue
            built = self.destination(name, spec, loc)
            if built:
                out[name] = built
        return out

    def destination(self, name: str, spec: Any, loc: Loc) -> Destination | None:
        if isinstance(spec, str):
            return self.url_destination(name, spec, loc)
        if not isinstance(spec, dict):
            self.problem(loc, "a destination is a mapping with a 'type' key, or a URL string")
            return None
        spec = dict(spec)
        type_name = spec.pop("type", None)
        if type_name is None:
            self.problem(loc, f"missing required key 'type' (installed types: "
                              f"{', '.join(self.registry.destination_types) or 'none'})")
            return None
        dtype = self.registry.destination_types.get(str(type_name))
        if dtype is None:
            installed = list(self.registry.destination_types)
            self.problem((*loc, "type"),
                         f"unknown destination type '{type_name}'{suggest(str(type_name), installed)}"
                         f"; installed types: {', '.join(installed) or 'none'}"
                         f"{self.registry.failure_note}")
            return None
        return self.build(name, dtype, spec, loc)

    def url_destination(self, name: str, url: str, loc: Loc) -> Destination | None:
        match = _URL_SCHEME.match(url)
        if not match:
            self.problem(loc, "a destination given as a string must be a URL such as "
                              "pagerduty://... or slack://...")
            return None
        scheme = match.group(1).lower()
        # Each candidate either takes the URL (a mapping), rejects it as wrong (ValueError), or
        # declines it as not its own (None: an https URL of another host), passing it on.
        for dtype in self.registry.types_for_scheme(scheme):
            if dtype.from_url is None:
                continue
            try:
                spec = dtype.from_url(url)
            except ValueError as exc:
                self.problem(loc, f"cannot read this {scheme}:// URL: {exc}")
                return None
            if spec is not None:
                return self.build(name, dtype, dict(spec), loc)
        self.problem(loc, f"no installed destination type handles '{scheme}://' URLs"
                          f"{self.registry.failure_note}")
        return None

    def build(self, name: str, dtype: DestinationType, spec: dict[str, Any],
              loc: Loc) -> Destination | None:
        try:
            config = dtype.config_model.model_validate(spec)
        except ValidationError as exc:
            self.pydantic_problems(exc, dtype.config_model, loc)
            return None
        if config.digest is not None and not dtype.supports_digest:
            self.problem((*loc, "digest"), f"{dtype.title} destinations cannot be digested"
                         + (": pages stay individual (the dedup key already groups repeats)"
                            if dtype.name == "pagerduty" else ""))
            return None
        return Destination(name, dtype, config)

    # -- cross references ------------------------------------------------------------------------
    def check_owners(self, raw: dict[Any, Any], destination_names: set[str]) -> None:
        """Every destination an owner maps to exists; no destination is called ``owners``."""
        if OWNERS in destination_names and raw:
            self.problem(("destinations", OWNERS), "a destination cannot be called 'owners' "
                                                   "when the config has an owners: map (rules "
                                                   "send to the owners' destinations by it)")
        for owner, dests in raw.items():
            for j, dest in enumerate(_strings(dests)):
                if dest not in destination_names:
                    where = ("owners", str(owner), j) if isinstance(dests, list) else (
                        "owners", str(owner))
                    self.problem(where, f"unknown destination '{dest}'"
                                        f"{suggest(dest, destination_names)}")


    def check_rules(self, raw_rules: list[Any], destination_names: set[str]) -> None:
        """Cross-references, checked on the raw rules so they are reported even when another
        part of the same rule is invalid."""
        seen: dict[str, int] = {}
        events = self.registry.event_types
        for i, raw in enumerate(raw_rules):
            if not isinstance(raw, dict):
                continue
            loc: Loc = ("rules", i)
            name = raw.get("name")
            if isinstance(name, str) and name:
                slug = rule_slug(name)
                if slug in seen:
                    other = raw_rules[seen[slug]].get("name")
                    same = "is already used by" if other == name else (
                        f"gives the same dedup key as '{other}' in")
                    self.problem((*loc, "name"), f"rule name '{name}' {same} rules[{seen[slug]}]; "
                                                 "rule names must be unique (they are part of "
                                                 "the dedup key)")
                seen.setdefault(slug, i)
            rule_events = _strings(raw.get("event"))
            for j, event in enumerate(rule_events):
                if event not in events:
                    where = (*loc, "event", j) if isinstance(raw.get("event"), list) else (*loc, "event")
                    self.problem(where, f"unknown event type '{event}'{suggest(event, events)}; "
                                        f"known: {', '.join(events)}")
            conditions = raw.get("conditions")
            if isinstance(conditions, dict) and rule_events:
                if "changes" in conditions and set(rule_events) != {"schema_change"}:
                    self.problem((*loc, "conditions", "changes"),
                                 "the changes condition applies only to rules with "
                                 "event: schema_change")
                if "min_delay_hours" in conditions and set(rule_events) != {"freshness_violation"}:
                    self.problem((*loc, "conditions", "min_delay_hours"),
                                 "min_delay_hours applies only to rules with "
                                 "event: freshness_violation")
            raw_dests = raw.get("destinations")
            for j, dest in enumerate(_strings(raw_dests)):
                if dest not in destination_names:
                    where = (*loc, "destinations", j) if isinstance(raw_dests, list) else (
                        *loc, "destinations")
                    hint = (": 'owners' needs an owners: map in the config" if dest == OWNERS
                            else suggest(dest, destination_names))
                    self.problem(where, f"unknown destination '{dest}'{hint}")


def _strings(value: Any) -> list[str]:
    """A string or a list's strings (other items are reported by the model's own validation)."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
