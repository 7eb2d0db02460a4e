"""User templates for message text: Jinja2, sandboxed, and escaped for the place they are sent to.

A config may shape the words of a notification with a template (a PagerDuty summary, a Slack
text, an email subject or body). The two sides of a template are trusted differently: the
template text is written by the config's author, while the alert it is filled with comes from a
monitor and may hold anything (an asset named ``<!channel>`` or ``<script>``, a title with
``\\r\\nBcc:`` in it). So a template gets the same protection the built-in formats give:

- every ``{{ expression }}`` is escaped for its destination by the ``escape`` function given to
  :func:`compile_template` (Slack's ``& < >``, :func:`html.escape` for HTML), whatever filters,
  concatenation or ``Markup`` values produced it; literal template text is not escaped. Filters
  and tags that would switch escaping off (``safe``, ``{% autoescape %}``) or apply to text
  already escaped (``{% filter %}`` blocks) are refused when the template is compiled. A macro's
  output (``{{ row(alert.asset.name) }}``) is not escaped a second time: it is made only of the
  macro's own text and of values it escaped already;
- a ``single_line`` template (a subject, a summary) gets every line break in its values and in
  its own text turned into a space, so no header can be smuggled in;
- it runs in Jinja's immutable sandbox, without a loader: no file can be read (``include``,
  ``import`` and ``extends`` are refused), no attribute that starts with ``_`` can be reached,
  nothing in the data can be changed, and a template that loops, recurses or grows too much
  stops with an error instead of holding a worker;
- every name it uses is checked when the config is loaded (``alert.titel`` is reported there,
  with a suggestion), and anything that goes wrong while rendering is a :class:`TemplateError`
  with the template's line, never another exception.

Templates see plain data only (see :data:`FIELDS` and :func:`template_context`), never the
model objects, so what a template can reach is exactly what is documented. Blocks are trimmed
(``trim_blocks`` and ``lstrip_blocks``): a ``{% for %}`` on its own line leaves no blank line in
the message, and one newline at the end of a template (YAML's ``|`` adds one) is dropped.
``None`` prints as nothing.

Jinja2 is imported the first time a template is compiled, so that a config without templates
starts without it.

Example::

    from armor_notify.templates import compile_template, template_context

    subject = compile_template("[{{ alert.severity | upper }}] {{ alert.title }}",
                               single_line=True, max_length=200)
    subject.render(template_context(notification))  # "[CRITICAL] 2 columns removed from orders"
"""

from __future__ import annotations

import functools
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel

from .alert import Alert, one_line
from .secrets import ELLIPSIS
from .validation import suggest

if TYPE_CHECKING:
    from jinja2 import nodes
    from jinja2.runtime import Context
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from .destinations import Notification
    from .outcome import Outcome

__all__ = [
    "FIELDS",
    "MACRO_STEPS",
    "MAX_OUTPUT",
    "MAX_SECONDS",
    "MAX_STEPS",
    "Template",
    "TemplateError",
    "TemplateText",
    "compile_template",
    "render_named",
    "template_context",
    "template_failed",
]

MAX_OUTPUT = 100_000
"""Characters a rendered template may have; the rest is cut (before ``max_length`` applies)."""
MAX_STEPS = 1_000_000
"""Loop iterations and calls one rendering may make before it stops with an error."""
MACRO_STEPS = 10
"""What one macro call counts for against :data:`MAX_STEPS`: it costs about ten loop iterations,
so a macro that calls itself twice per level stops in well under a second."""
MAX_SECONDS = 5.0
"""How long one rendering may take, whatever it does (a rendering takes milliseconds)."""
_MAX_VALUE = 1_000_000
"""Characters (or items) one value may grow to while rendering: a string doubled in a loop, or
padded to a width of ten billion, stops here instead of exhausting memory."""

FIELDS: Mapping[str, str] = types.MappingProxyType({
    "alert": "the alert as received: alert.title, alert.severity, alert.asset.name, "
             "alert.changes[0].column… (every field of the alert format)",
    "status": "triggered, acknowledged or resolved",
    "action": "trigger, acknowledge or resolve: the status as PagerDuty words it",
    "rule": "the name of the rule that routed the alert",
    "destination": "the destination's name in the config",
    "dedup_key": "the key that ties an alert's trigger, acknowledge and resolve together",
    "source": "defaults.source: the monitoring product's name (anomalyarmor)",
    "link_text": "defaults.link_text: the text of the link to the alert",
    "test": "true when the notification is sent by armor-notify test",
    "message": "the built-in wording: message.headline, message.summary, message.fields, "
               "message.change_lines, message.freshness, message.time_text…",
    "digest": "the alerts a digest summarises, each like alert; empty for a single alert",
})
"""The names a template may use, each with one line for the documentation. Jinja's own helpers
(``range``, ``dict``, ``namespace``, ``cycler``, ``joiner``, and ``loop`` in a loop) come on top."""

_NO_ESCAPE_FILTERS = ("safe", "escape", "e", "forceescape")
"""Filters that mark text as safe or escape it for HTML: escaping is the destination's job."""

_TEMPLATE_FILE = "<template>"
"""The file name Jinja gives a template compiled from a string: its frames in a traceback."""


class TemplateError(ValueError):
    """A template that cannot be compiled or rendered: message, and the line in the template (1-based)
    when known.

    A :class:`ValueError`, so that a config model's validator can compile a template and let
    pydantic report the problem at the template's place in the config. ``str(err)`` reads
    ``line 3: unknown field 'alert.titel' (did you mean 'alert.title'?)``.
    """

    line: int | None
    message: str

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message

    def within(self, where: str) -> TemplateError:
        """The same error, said of the template at ``where`` (``template.subject, line 2: …``)."""
        return TemplateError(f"{where}, {self}" if self.line else f"{where}: {self.message}")


class Template:
    """A compiled template. Render it as often as needed, from any thread."""

    source: str
    """The template text as written in the config."""
    single_line: bool
    """Every line break becomes a space, in the values and in the result."""
    max_length: int | None
    """The result is cut to this many characters, ending with ``…``; ``None``: not cut."""

    def __init__(self, source: str, compiled: Any, *, escaped: bool, single_line: bool,
                 max_length: int | None) -> None:
        self.source = source
        self.single_line = single_line
        self.max_length = max_length
        self._compiled = compiled
        self._escaped = escaped

    def __repr__(self) -> str:
        return f"<Template {self.source[:40]!r}{ELLIPSIS if len(self.source) > 40 else ''}>"

    def render(self, context: Mapping[str, Any]) -> str:
        """The template filled with ``context`` (usually :func:`template_context`'s data).

        Raises :class:`TemplateError` for anything that goes wrong, with the template's line when
        it can be told: an undefined value (``alert.freshness.delay_hours`` when the alert has no
        freshness), an attribute the sandbox refuses, a type error, a division by zero, too much
        work or recursion.
        """
        budget = _STEPS.set(_Budget())
        chunks: list[str] = []
        size = 0
        try:
            stream = self._compiled.generate(context)
            try:
                for chunk in stream:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_OUTPUT:
                        break  # the rest is never produced
            finally:
                stream.close()
        except Exception as exc:
            raise _render_error(exc) from exc
        finally:
            _STEPS.reset(budget)
        text = "".join(chunks)
        if len(text) > MAX_OUTPUT:
            text = _cut(text, MAX_OUTPUT, self._escaped)
        if self.single_line:
            text = one_line(text)
        if self.max_length is not None:
            text = _cut(text, self.max_length, self._escaped)
        return text


def compile_template(source: str, *, escape: Callable[[str], str] | None = None,
                     single_line: bool = False, max_length: int | None = None) -> Template:
    """Compile ``source`` once; raise :class:`TemplateError` for anything wrong with it.

    ``escape`` is applied to every value a ``{{ … }}`` prints (not to the template's own text):
    the destination's escaping, or ``None`` for plain text sent as it is. Pass a function defined
    once (not a new lambda per call) so that templates share their Jinja environment.
    ``single_line`` turns every line break into a space, in the values and in the result (for a
    subject, a title, a summary). ``max_length`` cuts the result with ``…`` to at most that many
    characters.

    Refused here, each with its line: a syntax error, a name or field that does not exist (with a
    suggestion), an unknown filter or test, a ``_`` attribute, ``include``, ``import``,
    ``extends``, ``{% autoescape %}``, ``{% filter %}`` blocks and the ``safe``/``escape``
    filters.
    """
    if max_length is not None and max_length < 1:
        raise ValueError("max_length must be at least 1")
    env = _environment(escape, single_line)
    from jinja2 import TemplateSyntaxError

    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", exc.lineno) from None
    except Exception as exc:  # a parser recursion limit on absurd nesting, for one
        raise TemplateError(f"cannot be read: {_describe(exc)}") from None
    _refuse_unsafe_constructs(tree, env)
    _check_names(tree)
    _prepare(tree, env)
    try:
        compiled = env.from_string(tree)
    except TemplateSyntaxError as exc:
        raise TemplateError(exc.message or "syntax error", exc.lineno) from None
    except Exception as exc:
        raise TemplateError(f"cannot be compiled: {_describe(exc)}") from None
    return Template(source, compiled, escaped=escape is not None, single_line=single_line,
                    max_length=max_length)


class TemplateText(NamedTuple):
    """A config model's template field: ``Annotated[Template, TemplateText(...)]``. The text is
    compiled when the config is loaded, with these settings (see :func:`compile_template`), so a
    mistake is reported at the field's place in the config, on the template's own line; the
    field dumps back to its text.

    Example: ``subject: Annotated[Template, TemplateText(single_line=True)] | None = None``."""

    escape: Callable[[str], str] | None = None
    single_line: bool = False
    max_length: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            self._compiled, serialization=core_schema.plain_serializer_function_ser_schema(
                lambda template: template.source, return_schema=core_schema.str_schema()))

    def _compiled(self, value: Any) -> Template:
        if isinstance(value, Template):
            return value
        if not isinstance(value, str):
            raise ValueError("a template is text")
        return compile_template(value, escape=self.escape, single_line=self.single_line,
                                max_length=self.max_length)


def render_named(templates: Mapping[str, Template], context: Mapping[str, Any]) -> dict[str, str]:
    """Each template rendered, by name; a :class:`TemplateError` names the one that failed
    (``template.subject, line 2: …``)."""
    out = {}
    for name, template in templates.items():
        try:
            out[name] = template.render(context)
        except TemplateError as exc:
            raise exc.within(f"template.{name}") from None
    return out


def template_failed(error: TemplateError, notification: Notification) -> Outcome:
    """The outcome of a delivery whose template failed for its alert: failed (a retry would
    fail the same way), with the reason and where to look; the other deliveries go on."""
    from .outcome import Outcome

    return Outcome.failed(
        f"a template failed for this alert: {error}",
        hint=f"fix the template of destination '{notification.destination}'; `armor-notify "
             f"preview ALERT_FILE -d {notification.destination}` shows what it makes")


def template_context(notification: Notification) -> dict[str, Any]:
    """The data a template sees (:data:`FIELDS`): plain JSON-like values only.

    ``alert`` (and each alert of ``digest``) has the alert format's field names (``schema``,
    ``from``), times as ISO 8601 text and the severity as a word. ``message`` holds the words of
    :func:`armor_notify.message.build_message`, unescaped like the rest: the template's
    ``escape`` escapes whatever is printed.
    """
    from .message import build_message  # the built-in wording: only when a template renders

    alert = notification.alert
    message = build_message(notification)
    return {
        "alert": _alert_data(alert),
        "status": alert.status,
        "action": notification.action,
        "rule": notification.rule,
        "destination": notification.destination,
        "dedup_key": notification.dedup_key,
        "source": notification.source,
        "link_text": notification.link_text,
        "test": notification.test,
        "message": {
            "headline": message.headline,
            "title": message.title,
            "summary": message.summary,
            "event": message.event,
            "severity": message.severity,
            "state": message.state,
            "fields": [{"label": f.label, "value": f.value} for f in message.fields],
            "description": message.description,
            "changes": [{"kind": c.kind, "column": c.column, "detail": c.detail,
                         "breaking": c.breaking, "text": c.text} for c in message.changes],
            "more_changes": message.more_changes,
            "change_lines": message.change_lines(),
            "changes_summary": message.changes_summary,
            "freshness": message.freshness,
            "link": message.link,
            "time_text": message.time_text,
            "test_notice": message.test_notice,
        },
        "digest": [_alert_data(item) for item in notification.digest],
    }


def _alert_data(alert: Alert) -> dict[str, Any]:
    data: dict[str, Any] = alert.model_dump(mode="json", by_alias=True)
    return data


# -- what a template may name ----------------------------------------------------------------------


class _Object(NamedTuple):
    """A mapping whose keys are known: a name not among them is a typo."""

    fields: Mapping[str, _Schema]


class _List(NamedTuple):
    """A list: its items are reached by index or by a loop."""

    item: _Schema


_Schema = _Object | _List | None
"""What is known about a value; ``None`` for text, numbers and anything not checked further."""


def _model_schema(model: type[BaseModel]) -> _Object:
    """A pydantic model's JSON shape: field names as they are dumped (aliases), nested models."""
    return _Object({info.alias or name: _type_schema(info.annotation)
                    for name, info in model.model_fields.items()})


def _type_schema(annotation: Any) -> _Schema:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_schema(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        return _type_schema(options[0]) if len(options) == 1 else None
    if origin in (tuple, list):
        items = get_args(annotation)
        return _List(_type_schema(items[0]) if items else None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_schema(annotation)
    return None


@functools.cache
def _context_schema() -> dict[str, _Schema]:
    """The shape of :func:`template_context`'s data (kept in step with it by the tests)."""
    alert = _model_schema(Alert)
    message = _Object({
        **dict.fromkeys(("headline", "title", "summary", "event", "severity", "state",
                         "description", "more_changes", "changes_summary", "freshness", "link",
                         "time_text", "test_notice")),
        "fields": _List(_Object(dict.fromkeys(("label", "value")))),
        "changes": _List(_Object(dict.fromkeys(("kind", "column", "detail", "breaking", "text")))),
        "change_lines": _List(None),
    })
    schema: dict[str, _Schema] = dict.fromkeys(FIELDS)
    schema.update(alert=alert, message=message, digest=_List(alert))
    return schema


def _check_names(tree: nodes.Template) -> None:
    """Every name must be one of :data:`FIELDS` (or a name the template sets), and every field
    reached from one (``alert.asset.name``, ``alert["title"]``, ``c.column`` in a loop over
    ``alert.changes``) must exist."""
    from jinja2 import meta, nodes

    unknown = meta.find_undeclared_variables(tree) - set(FIELDS)
    if unknown:
        first = min((n for n in tree.find_all(nodes.Name) if n.name in unknown),
                    key=lambda n: n.lineno)
        raise TemplateError(f"unknown field '{first.name}'{_suggest_name(first.name)}; a "
                            f"template can use: {', '.join(FIELDS)}", first.lineno)

    # A name the template binds itself (set, with, a macro's parameter) may hold anything, so
    # only names bound by nothing but loops are followed (to the items of the list looped over).
    bindings: dict[str, set[type]] = {}
    for node in tree.find_all(nodes.Name):
        if node.ctx in ("store", "param"):
            bindings.setdefault(node.name, set())
    for binder in tree.find_all((nodes.For, nodes.Assign, nodes.AssignBlock, nodes.With,
                                 nodes.Macro, nodes.CallBlock)):
        for name in _bound_names(binder):
            bindings.setdefault(name, set()).add(type(binder))
    loop_only = {name for name, kinds in bindings.items() if kinds == {nodes.For}}
    schema = _context_schema()
    scope = {name: schema[name] for name in FIELDS if name not in bindings or name in loop_only}
    _walk(tree, scope, loop_only)


def _bound_names(node: nodes.Node) -> set[str]:
    from jinja2 import nodes

    if isinstance(node, nodes.For):
        targets: list[nodes.Node] = [node.target]
    elif isinstance(node, (nodes.Assign, nodes.AssignBlock)):
        targets = [node.target]
    elif isinstance(node, nodes.With):
        targets = list(node.targets)
    elif isinstance(node, nodes.Macro):
        targets = [*node.args, nodes.Name(node.name, "store")]
    elif isinstance(node, nodes.CallBlock):
        targets = list(node.args)
    else:
        targets = []
    names = set()
    for target in targets:
        if isinstance(target, nodes.Name):
            names.add(target.name)
        names |= {n.name for n in target.find_all(nodes.Name)}
    return names


def _walk(node: nodes.Node, scope: Mapping[str, _Schema], loop_only: set[str]) -> None:
    from jinja2 import nodes

    if isinstance(node, nodes.For):
        _walk(node.iter, scope, loop_only)
        inner = dict(scope)
        for name in _bound_names(node):
            inner[name] = None
        if isinstance(node.target, nodes.Name) and node.target.name in loop_only:
            looped = _resolve(node.iter, scope)
            inner[node.target.name] = looped.item if isinstance(looped, _List) else None
        for child in [*node.body, *([node.test] if node.test else [])]:
            _walk(child, inner, loop_only)
        for child in node.else_:
            _walk(child, scope, loop_only)
        return
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        _resolve(node, scope, loop_only)
        return
    for child in node.iter_child_nodes():
        _walk(child, scope, loop_only)


_UNCHECKED = object()


def _resolve(node: nodes.Node, scope: Mapping[str, _Schema],
             loop_only: set[str] | None = None) -> _Schema:
    """Check the chain of fields ``node`` reaches (``alert.changes[0].column``) and return what is
    known about its value. With ``loop_only`` (when walking the tree), also walk the parts that
    are not the chain itself (a computed index)."""
    from jinja2 import nodes

    steps: list[nodes.Getattr | nodes.Getitem] = []
    base = node
    while isinstance(base, (nodes.Getattr, nodes.Getitem)):
        steps.append(base)
        base = base.node
    steps.reverse()
    if loop_only is not None:
        if not isinstance(base, nodes.Name):
            _walk(base, scope, loop_only)
        for step in steps:
            if isinstance(step, nodes.Getitem):
                _walk(step.arg, scope, loop_only)
    if not isinstance(base, nodes.Name):
        return None
    schema = scope.get(base.name)
    path = base.name
    for step in steps:
        if schema is None:
            return None
        if isinstance(step, nodes.Getattr):
            key: object = step.attr
        elif isinstance(step.arg, nodes.Const):
            key = step.arg.value
        else:
            key = _UNCHECKED
        if isinstance(schema, _Object):
            if not isinstance(key, str):
                return None  # a computed key: cannot be checked
            if key in schema.fields:
                schema = schema.fields[key]
                path += f".{key}"
                continue
            if isinstance(step, nodes.Getattr) and hasattr(dict, key):
                return None  # alert.items(), alert.get("title"): a mapping's own methods
            raise TemplateError(f"unknown field '{path}.{key}'{_suggest_field(path, key, schema)}",
                                step.lineno)
        # a list: reached by index, by slice or by a loop
        if isinstance(step, nodes.Getitem) and isinstance(step.arg, nodes.Slice):
            path += "[…]"
            continue
        if isinstance(step, nodes.Getitem) and not isinstance(key, str):
            schema = schema.item
            path += f"[{key}]" if isinstance(key, int) else "[…]"
            continue
        if isinstance(step, nodes.Getattr) and hasattr(list, step.attr):
            return None  # alert.tags.index("gold"): a list's own methods
        raise TemplateError(
            f"unknown field '{path}.{key}': '{path}' is a list; take one item "
            f"({path}[0]) or loop over it ({{% for item in {path} %}})", step.lineno)
    return schema


def _suggest_name(name: str) -> str:
    hint = suggest(name, FIELDS)
    if hint:
        return hint
    for top in ("alert", "message"):
        found = _context_schema()[top]
        if isinstance(found, _Object) and name in found.fields:
            return f" (did you mean '{top}.{name}'?)"
    return ""


def _suggest_field(path: str, key: str, schema: _Object) -> str:
    # suggest() words the hint around the closest key; the hint names the whole path instead.
    return suggest(key, schema.fields).replace("'", f"'{path}.", 1)


# -- what a template may do ------------------------------------------------------------------------


def _refuse_unsafe_constructs(tree: nodes.Template, env: ImmutableSandboxedEnvironment) -> None:
    """Refuse what would read files, switch escaping off or reach Python's internals."""
    from jinja2 import nodes

    refused: list[tuple[type[nodes.Node], str]] = [
        (nodes.Include, "'{% include %}' is not available: a template cannot read other files; "
                        "write the text in this template (a macro can repeat it)"),
        (nodes.Import, "'{% import %}' is not available: a template cannot read other files; "
                       "define the macro in this template"),
        (nodes.FromImport, "'{% from … import %}' is not available: a template cannot read other "
                           "files; define the macro in this template"),
        (nodes.Extends, "'{% extends %}' is not available: a template cannot read other files"),
        (nodes.EvalContextModifier, "'{% autoescape %}' is not available: every value is "
                                    "escaped for the destination, always"),
        (nodes.FilterBlock, "'{% filter %}' blocks are not available: they apply to text that "
                            "is already escaped; apply the filter to the value instead "
                            "({{ alert.title | upper }})"),
    ]
    for kind, why in refused:
        for found in tree.find_all(kind):
            raise TemplateError(why, found.lineno)
    for getattr_node in tree.find_all(nodes.Getattr):
        if getattr_node.attr.startswith("_"):
            raise TemplateError(_private(getattr_node.attr), getattr_node.lineno)
    for getitem_node in tree.find_all(nodes.Getitem):
        key = getitem_node.arg.value if isinstance(getitem_node.arg, nodes.Const) else None
        if isinstance(key, str) and key.startswith("_"):
            raise TemplateError(_private(key), getitem_node.lineno)
    for filter_node in tree.find_all(nodes.Filter):
        if filter_node.name in _NO_ESCAPE_FILTERS:
            raise TemplateError(
                f"the '{filter_node.name}' filter is not available: every value is escaped for "
                "the destination, and cannot be marked safe or escaped again",
                filter_node.lineno)
        if filter_node.name not in env.filters or filter_node.name.startswith("_"):
            raise TemplateError(f"unknown filter '{filter_node.name}'"
                                f"{suggest(filter_node.name, _public(env.filters))}",
                                filter_node.lineno)
    for test_node in tree.find_all(nodes.Test):
        if test_node.name not in env.tests:
            raise TemplateError(f"unknown test '{test_node.name}'"
                                f"{suggest(test_node.name, _public(env.tests))}",
                                test_node.lineno)


def _private(name: str) -> str:
    return (f"'{name}' is not available: names that start with '_' reach Python's internals, "
            "which templates cannot use")


def _public(names: Iterable[str]) -> list[str]:
    return [name for name in names if not name.startswith("_")]


_STEP_FILTER = "_armor_steps"
_MACRO_FILTER = "_armor_macro"
_CALL_BLOCK_FILTER = "_armor_macro_only"


def _prepare(tree: nodes.Template, env: ImmutableSandboxedEnvironment) -> None:
    """Rewrite the tree before it is compiled: every loop counts its iterations against
    :data:`MAX_STEPS`, a macro printed on its own (``{{ row(…) }}``) is not escaped twice, and
    ``{% call %}`` calls macros only.

    Jinja writes what a ``{% call %}`` block's call returns straight into the output, unescaped.
    That is safe for a macro (its text and values it escaped), but not for anything else:
    ``{% call "{x}".format(x=alert.asset.name) %}{% endcall %}`` would print the asset's name as
    it is.
    """
    from jinja2 import nodes

    def made(node: nodes.Filter) -> nodes.Filter:
        node.set_environment(env)
        return node

    for loop in tree.find_all(nodes.For):
        # range(…) becomes range(…)|_armor_steps: the iterable, counted as it is consumed
        loop.iter = made(nodes.Filter(loop.iter, _STEP_FILTER, [], [], None, None,
                                      lineno=loop.iter.lineno))
    for output in tree.find_all(nodes.Output):
        # row(a, b) becomes row|_armor_macro(a, b): the filter calls row and knows if it is a macro
        output.nodes = [
            made(nodes.Filter(child.node, _MACRO_FILTER, child.args, child.kwargs, child.dyn_args,
                              child.dyn_kwargs, lineno=child.lineno))
            if isinstance(child, nodes.Call) and isinstance(child.node, nodes.Name) else child
            for child in output.nodes
        ]
    for block in tree.find_all(nodes.CallBlock):
        block.call.node = made(nodes.Filter(block.call.node, _CALL_BLOCK_FILTER, [], [], None, None,
                                            lineno=block.call.lineno))


class _MacroOutput(str):
    """A macro's output on its way to being printed: its own text, and values it has escaped
    already. Made only by the macro filter, which checks that what it called is a macro."""

    __slots__ = ()


def _finalizer(escape: Callable[[str], str] | None, single_line: bool) -> Callable[[Any], str]:
    """What happens to each printed value: ``None`` is nothing, ``Markup`` is plain text like any
    other, line breaks go for a single-line template, and then the destination's escaping."""

    def finalize(value: Any) -> str:
        if value is None:
            return ""
        trusted = type(value) is _MacroOutput
        text = str(value)
        if type(text) is not str:
            text = str.__str__(text)  # Markup and other str subclasses: their plain text
        if single_line:
            text = " ".join(text.splitlines())  # every break str.splitlines() knows
        if escape is not None and not trusted:
            text = escape(text)
        return text

    return finalize


@functools.lru_cache(maxsize=64)
def _environment(escape: Callable[[str], str] | None,
                 single_line: bool) -> ImmutableSandboxedEnvironment:
    """One sandbox per escaping and line mode, shared by the templates compiled with them."""
    from jinja2 import StrictUndefined, pass_context, pass_eval_context
    from jinja2.exceptions import SecurityError
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Macro
    from jinja2.sandbox import safe_range
    from jinja2.utils import Cycler, Joiner

    env = _sandbox_class()(undefined=StrictUndefined, autoescape=False,
                           finalize=_finalizer(escape, single_line), trim_blocks=True,
                           lstrip_blocks=True, keep_trailing_newline=False, auto_reload=False)
    env.globals.clear()
    env.globals.update(range=safe_range, dict=dict, namespace=_namespace_class(), cycler=Cycler,
                       joiner=Joiner)  # lipsum is left out: it has no use in alerts
    for name in _NO_ESCAPE_FILTERS:
        env.filters.pop(name, None)

    filters = env.filters
    center, indent, replace, join, sliced, format_ = (
        filters["center"], filters["indent"], filters["replace"], filters["join"],
        filters["slice"], filters["format"])

    def center_filter(value: Any, width: int = 80) -> Any:
        _check_growth("center", str(value), (width,))
        return center(value, width)

    def indent_filter(value: Any, width: int | str = 4, first: bool = False,
                      blank: bool = False) -> Any:
        _check_growth("indent", str(value), (width,))
        return indent(value, width, first, blank)

    @pass_eval_context
    def replace_filter(eval_ctx: EvalContext, value: Any, old: Any, new: Any,
                       count: int | None = None) -> Any:
        _check_growth("replace", str(value), (str(old), str(new)))
        return replace(eval_ctx, value, old, new, count)

    @pass_eval_context
    def join_filter(eval_ctx: EvalContext, value: Any, d: str = "",
                    attribute: str | int | None = None) -> Any:
        items = value if isinstance(value, Sequence) else list(value)
        _check_growth("join", str(d), (items,))
        return join(eval_ctx, items, d, attribute)

    @pass_eval_context
    def slice_filter(eval_ctx: EvalContext, value: Any, slices: int, fill_with: Any = None) -> Any:
        _check_growth("slice", "", (slices,))
        return sliced(eval_ctx, value, slices, fill_with)

    def format_filter(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_growth("%", str(value), ())
        return format_(value, *args, **kwargs)

    @pass_context
    def steps_filter(context: Context, iterable: Any) -> Iterator[Any]:
        return _counted(iterable)

    @pass_context
    def macro_filter(context: Context, callee: Any, /, *args: Any, **kwargs: Any) -> Any:
        result = context.environment.call(context, callee, *args, **kwargs)  # type: ignore[attr-defined]
        if isinstance(callee, Macro) and isinstance(result, str):
            return _MacroOutput(result)
        return result

    def macro_only_filter(callee: Any) -> Any:
        if not isinstance(callee, Macro):
            raise SecurityError("'{% call %}' can only call a macro defined in the template")
        return callee

    filters.update(center=center_filter, indent=indent_filter, replace=replace_filter,
                   join=join_filter, slice=slice_filter, format=format_filter)
    filters[_STEP_FILTER] = steps_filter
    filters[_MACRO_FILTER] = macro_filter
    filters[_CALL_BLOCK_FILTER] = macro_only_filter
    return env


@functools.cache
def _sandbox_class() -> type[ImmutableSandboxedEnvironment]:
    from jinja2.runtime import LoopContext, Macro
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Sandbox(ImmutableSandboxedEnvironment):
        """Jinja's immutable sandbox, with every call counted and growth bounded."""

        # Intercepted operators are also never computed while compiling (10 ** 10 ** 10 would
        # hang compile_template otherwise).
        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
            _tick(MACRO_STEPS if isinstance(obj, Macro) else 1)
            for value in (*args, *kwargs.values()):
                _check_size(value)
            if isinstance(obj, LoopContext) and args:  # a recursive loop's inner level
                args = (_counted(args[0]), *args[1:])
            owner = getattr(obj, "__self__", None)
            if owner is None:
                wrapped = getattr(obj, "__wrapped__", None)  # the sandbox's str.format
                owner = getattr(wrapped, "__self__", None)
            if isinstance(owner, str):
                _check_growth(getattr(obj, "__name__", ""), owner, args)
            return super().call(context, obj, *args, **kwargs)

        def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
            _check_operands(operator, left, right)
            result = super().call_binop(context, operator, left, right)
            _check_size(result)
            return result

    return Sandbox


@functools.cache
def _namespace_class() -> type:
    from jinja2.utils import Namespace

    class BoundedNamespace(Namespace):
        """``namespace()``, whose values cannot grow beyond the limit (a string doubled in a
        loop)."""

        def __setitem__(self, name: str, value: Any) -> None:
            _check_size(value)
            super().__setitem__(name, value)

    return BoundedNamespace


# -- limits while rendering ------------------------------------------------------------------------


class _Budget:
    __slots__ = ("deadline", "steps")

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.deadline = time.monotonic() + MAX_SECONDS


_STEPS: ContextVar[_Budget | None] = ContextVar("armor_notify_template_steps", default=None)
"""The rendering in progress on this thread: its steps left."""

_MAX_BITS = 4096
_HUGE_WIDTH = re.compile(r"%[-#0 +]*(?:\*|\d{7,})|\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")
"""A width of a million characters or more in a %-format or a str.format."""


class _TooMuchWork(Exception):
    pass


class _TooBig(Exception):
    pass


def _tick(steps: int = 1) -> None:
    budget = _STEPS.get()
    if budget is None:  # not rendering: Jinja computing a constant while compiling
        return
    budget.steps -= steps
    if budget.steps < 0:
        raise _TooMuchWork(f"the template does too much work: more than {MAX_STEPS:,} loop "
                           "iterations and calls")
    if time.monotonic() > budget.deadline:
        raise _TooMuchWork(f"the template takes too long: more than {MAX_SECONDS:g} seconds")


def _counted(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _tick()
        yield item


def _check_size(value: Any) -> None:
    if isinstance(value, (str, list, tuple, dict)) and len(value) > _MAX_VALUE:
        raise _TooBig(f"a value grew beyond {_MAX_VALUE:,} characters or items")


def _check_operands(operator: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be huge, before it is computed."""
    sized = (str, list, tuple)
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        if right > 0 and abs(left) > 1 and left.bit_length() * right > _MAX_BITS:
            raise _TooBig(f"a number would grow beyond {_MAX_BITS} bits")
    elif operator == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > _MAX_BITS:
                raise _TooBig(f"a number would grow beyond {_MAX_BITS} bits")
        elif isinstance(left, sized) and isinstance(right, int):
            _check_size_of(len(left) * right)
        elif isinstance(left, int) and isinstance(right, sized):
            _check_size_of(left * len(right))
    elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
        _check_size_of(len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        _check_growth("%", left, ())


def _check_size_of(size: int) -> None:
    if size > _MAX_VALUE:
        raise _TooBig(f"a value would grow beyond {_MAX_VALUE:,} characters or items")


def _check_growth(name: str, text: str, args: Sequence[Any]) -> None:
    """Refuse a string operation whose result would exceed the limit, before it is built."""
    first = args[0] if args else None
    size = 0
    if name in ("center", "ljust", "rjust", "zfill", "slice") and isinstance(first, int):
        size = first
    elif name == "indent":
        width = len(first) if isinstance(first, str) else first if isinstance(first, int) else 0
        size = len(text) + width * (text.count("\n") + 1)
    elif name == "expandtabs":
        size = len(text) + text.count("\t") * (first if isinstance(first, int) else 8)
    elif name == "replace" and len(args) >= 2 and isinstance(first, str) and isinstance(args[1], str):
        found = text.count(first) if first else len(text) + 1
        size = len(text) + found * len(args[1])
    elif name == "join" and isinstance(first, Sequence):
        size = len(text) * len(first) + sum(len(item) for item in first if isinstance(item, str))
    elif name in ("%", "format", "format_map") and _HUGE_WIDTH.search(text):
        size = _MAX_VALUE + 1
    if size > _MAX_VALUE:
        raise _TooBig(f"'{name}' would make a value of more than {_MAX_VALUE:,} characters")


# -- errors and cutting ----------------------------------------------------------------------------


def _render_error(exc: Exception) -> TemplateError:
    from jinja2.exceptions import SecurityError, UndefinedError

    if isinstance(exc, TemplateError):
        return exc
    if isinstance(exc, SecurityError):
        message = f"not allowed: {exc}"
    elif isinstance(exc, UndefinedError):
        message = f"undefined value: {exc}"
    elif isinstance(exc, (_TooMuchWork, _TooBig)):
        message = str(exc)
    elif isinstance(exc, RecursionError):
        message = "recursion too deep (a macro or recursive loop that does not stop?)"
    else:
        message = _describe(exc)
    return TemplateError(message, _template_line(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _template_line(exc: BaseException) -> int | None:
    """The template's line where ``exc`` was raised: Jinja rewrites the traceback so that its
    frames carry the template's line numbers (the innermost one is where it happened)."""
    line = None
    trace = exc.__traceback__
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line


def _cut(text: str, limit: int, escaped: bool) -> str:
    """At most ``limit`` characters, ending with ``…`` when cut. An escaped template is not cut
    inside an entity (``&amp;``), which would show as ``&am…``."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    if escaped:
        amp = head.rfind("&")
        if amp != -1 and len(head) - amp < 10 and ";" not in head[amp:]:
            head = head[:amp]
    return head.rstrip() + ELLIPSIS
