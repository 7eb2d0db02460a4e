"""User message templates (``armor_notify.templates``): escaped per destination, one line where a
header needs one, sandboxed, checked when compiled, and never raising anything but TemplateError.

The alert is the untrusted side (an asset named ``<!channel>``, a description holding
``\\r\\nBcc:``); the template is the config author's, trusted to write its own text but never
able to turn escaping off, read files or reach Python's internals.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest
from markupsafe import Markup

from armor_notify.templates import (
    FIELDS,
    MAX_OUTPUT,
    Template,
    TemplateError,
    compile_template,
    template_context,
)
from armor_notify.testing import make_alert, make_notification


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


HOSTILE_ASSET = "<!channel>"


@pytest.fixture
def context() -> dict[str, Any]:
    alert = make_alert(asset={"name": HOSTILE_ASSET}, title="<script>alert(1)</script>",
                       description="first line\r\nBcc: evil@example.com")
    return template_context(make_notification(alert))


def render(source: str, context: dict[str, Any], **options: Any) -> str:
    return compile_template(source, **options).render(context)


def fails(source: str, context: dict[str, Any], **options: Any) -> TemplateError:
    """The TemplateError a template raises, when compiled or when rendered."""
    with pytest.raises(TemplateError) as caught:
        render(source, context, **options)
    return caught.value


# -- what a template sees --------------------------------------------------------------------------


def test_a_template_renders_the_alert_the_message_and_the_routing() -> None:
    notification = make_notification(make_alert(), rule="Prod", destination="slack-data")
    # block tags on their own lines leave no blank lines (trim_blocks, lstrip_blocks)
    text = render(
        "{{ message.headline }} | {{ alert.title }} on {{ alert.asset.name }} "
        "({{ alert.severity | upper }}) | {{ rule }} → {{ destination }} | {{ action }}/{{ status }}\n"
        "{% for line in message.change_lines %}\n"
        "- {{ line }}\n"
        "  {% endfor %}\n"
        "{% for f in message.fields %}{{ f.label }}={{ f.value }};{% endfor +%}\n"
        "{{ alert.changes[0].column }} was {{ alert.changes[0].from }}; link: {{ alert.link }}\n",
        template_context(notification))
    lines = text.split("\n")
    assert lines[0] == ("CRITICAL · Schema change | 2 columns removed from orders on "
                        "analytics.public.orders (CRITICAL) | Prod → slack-data | trigger/triggered")
    assert lines[1:3] == ["- Column removed: email (was varchar) — breaking",
                          "- Column added: contact_id (bigint)"]
    assert lines[3].startswith("Rule=Prod;Event type=schema_change;Asset=analytics.public.orders;")
    assert lines[4] == "email was varchar; link: https://app.anomalyarmor.ai/alerts/alert_kit"


def test_the_context_is_plain_json_data_with_the_alert_formats_names() -> None:
    alert = make_alert(asset={"schema": "public"},
                       freshness={"delay_hours": 5, "threshold_hours": 2},
                       check={"id": "not_null_orders_id", "status": "fail"})
    context = template_context(make_notification(alert, test=True))
    assert json.loads(json.dumps(context)) == context  # nothing but dict, list, str, numbers, None
    assert set(context) == set(FIELDS)
    assert context["alert"]["asset"]["schema"] == "public"  # aliases, not schema_ / from_
    assert context["alert"]["changes"][0]["from"] == "varchar"
    assert context["alert"]["severity"] == "critical"
    assert context["alert"]["check"]["status"] == "fail"
    assert context["test"] is True
    assert context["message"]["test_notice"].startswith("This is a test notification")
    assert context["message"]["freshness"].startswith("Data is 5 hours late")
    assert context["message"]["changes_summary"] == "2 changes (1 breaking)"
    assert context["digest"] == []


def test_every_value_in_the_context_passes_the_field_check_and_the_other_way_round() -> None:
    """The static check's schema and template_context's data are kept in step."""
    from armor_notify.templates import _context_schema, _List, _Object

    alert = make_alert(asset={"schema": "public", "kind": "table", "owners": ["data"],
                              "upstream": ["raw.orders"]},
                       freshness={"delay_hours": 5, "threshold_hours": 2,
                                  "last_updated_at": "2024-05-01T07:00:00Z"},
                       check={"id": "c1", "status": "fail", "run_id": "r1", "expect_every": "1h",
                              "source": "dbt"},
                       dedup_key="orders-schema")
    context = template_context(make_notification(alert, digest=(alert,)))

    def paths(value: Any, path: str) -> list[str]:
        if isinstance(value, dict):
            return [p for key, item in value.items() for p in paths(item, f"{path}.{key}")]
        if isinstance(value, list) and value:
            return [path, *paths(value[0], f"{path}[0]")]
        return [path]

    every = [p for name, value in context.items() for p in paths(value, name)]
    rendered = render("".join(f"{{{{ {p} }}}}|" for p in every), context)  # all known and defined
    assert rendered.count("|") == len(every)

    def schema_paths(schema: Any, path: str) -> list[str]:
        if isinstance(schema, _Object):
            return [p for key, item in schema.fields.items()
                    for p in schema_paths(item, f"{path}.{key}")]
        if isinstance(schema, _List):
            return [path, *schema_paths(schema.item, f"{path}[0]")]
        return [path]

    declared = [p for name, s in _context_schema().items() for p in schema_paths(s, name)]
    assert sorted(declared) == sorted(every)
    # alert.items would be the mapping's method, not a field: no field may be named like one
    assert not [p for p in declared if hasattr(dict, p.rsplit(".", 1)[-1])]


def test_a_digest_lists_its_alerts() -> None:
    first = make_alert(title="Columns removed from orders")
    second = make_alert(title="Orders is late", event_type="freshness_violation",
                        freshness={"delay_hours": 3})
    notification = make_notification(make_alert(title="2 alerts"), digest=(first, second))
    text = render("{{ alert.title }}:{% for a in digest %} [{{ a.event_type }}] {{ a.title }}"
                  "{% endfor %}", template_context(notification))
    assert text == ("2 alerts: [schema_change] Columns removed from orders "
                    "[freshness_violation] Orders is late")


# -- escaping --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "{{ alert.asset.name }}",
    "{{ alert.asset.name | upper }}",
    "{{ alert.asset.name | lower | trim }}",
    "{{ alert.asset.name ~ ' x' }}",
    "{{ alert.asset.name + ' x' }}",
    "{{ '%s' % alert.asset.name }}",
    "{{ '{}'.format(alert.asset.name) }}",
    "{{ '<!channel>' }}",
    "{{ [alert.asset.name] | join }}",
    "{{ alert['asset']['name'] }}",
    "{% set a = alert.asset.name %}{{ a }}",
    "{% for f in message.fields %}{{ f.value }}{% endfor %}",
    "{% macro m(v) %}{{ v }}{% endmacro %}{{ m(alert.asset.name) }}",
    "{% macro m() %}[{{ caller() }}]{% endmacro %}{% call m() %}{{ alert.asset.name }}{% endcall %}",
])
def test_slack_escaping_neutralises_a_mention_however_the_value_is_printed(
        source: str, context: dict[str, Any]) -> None:
    text = render(source, context, escape=slack_escape)
    assert text.count("&lt;!") == 1 and "<" not in text


def test_a_set_block_is_escaped_twice_where_a_macro_is_not(context: dict[str, Any]) -> None:
    """Safe either way; a macro is the way to name a piece of markup."""
    assert render("{% set a %}<{{ alert.asset.name }}>{% endset %}{{ a }}", context,
                  escape=slack_escape) == "&lt;&amp;lt;!channel&amp;gt;&gt;"
    assert render("{% macro a() %}<{{ alert.asset.name }}>{% endmacro %}{{ a() }}", context,
                  escape=slack_escape) == "<&lt;!channel&gt;>"


def test_the_templates_own_text_is_not_escaped(context: dict[str, Any]) -> None:
    text = render("<{{ alert.link }}|{{ link_text }}> & {{ alert.asset.name }}", context,
                  escape=slack_escape)
    assert text == ("<https://app.anomalyarmor.ai/alerts/alert_kit|View in AnomalyArmor> & "
                    "&lt;!channel&gt;")


def test_a_macro_is_escaped_once_its_values_inside_it(context: dict[str, Any]) -> None:
    text = render("{% macro row(label, value) %}<tr><td>{{ label }}</td><td>{{ value }}</td></tr>"
                  "{% endmacro %}{{ row('Asset', alert.asset.name) }}{{ row('Title', alert.title) }}",
                  context, escape=html.escape)
    assert text == ("<tr><td>Asset</td><td>&lt;!channel&gt;</td></tr>"
                    "<tr><td>Title</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td></tr>")


def test_html_escaping_neutralises_a_script(context: dict[str, Any]) -> None:
    text = render("<h1>{{ alert.title }}</h1><p>{{ message.summary | title }}</p>", context,
                  escape=html.escape)
    assert "<script>" not in text.lower()
    assert text.startswith("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1><p>")


def test_markup_values_are_escaped_like_any_other(context: dict[str, Any]) -> None:
    hostile = {**context, "rule": Markup("<!here>"), "source": Markup("<b>")}
    assert render("{{ rule }}{{ source ~ '' }}", hostile, escape=slack_escape) == (
        "&lt;!here&gt;&lt;b&gt;")


@pytest.mark.parametrize(("source", "words"), [
    ("{{ alert.asset.name | safe }}", "'safe' filter is not available"),
    ("x\n{{ alert.asset.name | e }}", "'e' filter is not available"),
    ("{{ alert.asset.name | escape }}", "'escape' filter is not available"),
    ("{{ alert.asset.name | forceescape }}", "'forceescape' filter is not available"),
    ("{{ [alert.asset.name] | map('safe') | first }}", None),  # by name at render time
    ("{% autoescape false %}{{ alert.asset.name }}{% endautoescape %}", "'{% autoescape %}'"),
    ("{% filter replace('&lt;', '<') %}{{ alert.asset.name }}{% endfilter %}", "'{% filter %}'"),
    ("{% set x | safe %}{{ alert.asset.name }}{% endset %}{{ x }}", "'safe' filter"),
    ('{% call "{x}".format(x=alert.asset.name) %}{% endcall %}', "can only call a macro"),
    ("{% call dict(a=alert.asset.name) %}{% endcall %}", "can only call a macro"),
])
def test_escaping_cannot_be_switched_off(source: str, words: str | None,
                                         context: dict[str, Any]) -> None:
    error = fails(source, context, escape=slack_escape)
    if words:
        assert words in str(error)
    assert error.line == source.count("\n", 0, source.find("alert")) + 1


# -- one line --------------------------------------------------------------------------------------


def test_a_single_line_template_drops_every_line_break(context: dict[str, Any]) -> None:
    text = render("Subject: {{ alert.description }}\r\nBcc: x\n", context, single_line=True)
    assert text == "Subject: first line Bcc: evil@example.com Bcc: x"
    assert "\r" not in text and "\n" not in text


def test_a_single_line_template_drops_breaks_in_every_value() -> None:
    # a context made by hand (or by a plugin) may hold anything: no model validated it
    context = {"alert": {"title": "ok\r\nBcc: evil@example.com\u2028\x85\vx"}}
    template = compile_template("Subject: {{ alert.title }}", single_line=True,
                                escape=html.escape)
    text = template.render(context)
    assert text == "Subject: ok Bcc: evil@example.com x"
    assert not set(text) & set("\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def test_line_breaks_survive_where_lines_are_allowed(context: dict[str, Any]) -> None:
    assert render("{{ alert.description }}\nend", context) == (
        "first line\r\nBcc: evil@example.com\nend")


def test_max_length_cuts_with_an_ellipsis(context: dict[str, Any]) -> None:
    assert render("{{ alert.asset.name }} and more text", context, max_length=10) == "<!channel…"
    assert render("short", context, max_length=10) == "short"
    # never inside an entity: "&lt;!" cut after "&l" would show as "&l…"
    assert render("ab {{ alert.asset.name }}", context, escape=slack_escape, max_length=6) == "ab…"


def test_a_subject_is_one_short_line(context: dict[str, Any]) -> None:
    text = render("[{{ alert.severity | upper }}] {{ alert.description }} {{ 'x' * 500 }}",
                  context, single_line=True, max_length=80, escape=html.escape)
    assert len(text) == 80 and text.endswith("…") and "\n" not in text and "\r" not in text
    assert text.startswith("[CRITICAL] first line Bcc: evil@example.com x")


# -- checked when compiled -------------------------------------------------------------------------


def test_a_syntax_error_names_its_line() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("a\n{{ alert.title \n")
    assert caught.value.line == 2
    assert str(caught.value).startswith("line 2: unexpected end of template")


def test_an_unknown_field_names_its_line_and_the_field_meant() -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("Hello\n{{ alert.titel }}")
    assert caught.value.line == 2
    assert str(caught.value) == "line 2: unknown field 'alert.titel' (did you mean 'alert.title'?)"
    assert isinstance(caught.value, ValueError)  # a config validator can raise it as it is


@pytest.mark.parametrize(("source", "message"), [
    ("{{ titel }}", "unknown field 'titel'; a template can use: alert, status"),
    ("{{ title }}", "unknown field 'title' (did you mean 'alert.title'?)"),
    ("{{ rulle }}", "unknown field 'rulle' (did you mean 'rule'?)"),
    ("{{ lipsum() }}", "unknown field 'lipsum'"),
    ("{{ alert.asset.nam }}", "unknown field 'alert.asset.nam' (did you mean 'alert.asset.name'?)"),
    ('{{ alert["titel"] }}', "unknown field 'alert.titel' (did you mean 'alert.title'?)"),
    ("{{ alert.changes[0].columnn }}",
     "unknown field 'alert.changes[0].columnn' (did you mean 'alert.changes[0].column'?)"),
    ("{{ alert.changes.column }}", "'alert.changes' is a list; take one item (alert.changes[0])"),
    ("{{ alert.freshness.delay }}",
     "unknown field 'alert.freshness.delay' (did you mean 'alert.freshness.delay_hours'?)"),
    ("{% for c in alert.changes %}{{ c.columnn }}{% endfor %}",
     "unknown field 'c.columnn' (did you mean 'c.column'?)"),
    ("{% for f in message.fields %}{{ f.lable }}{% endfor %}", "unknown field 'f.lable'"),
    ("{% for a in digest %}{{ a.asset.nme }}{% endfor %}", "unknown field 'a.asset.nme'"),
    ("{{ message.headlin }}", "(did you mean 'message.headline'?)"),
    ("{{ alert.title | uper }}", "unknown filter 'uper' (did you mean 'upper'?)"),
    ("{% if alert is mapp %}{% endif %}", "unknown test 'mapp' (did you mean 'mapping'?)"),
])
def test_unknown_names_are_refused_when_compiled(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template(source)
    assert message in str(caught.value)
    assert caught.value.line == 1


@pytest.mark.parametrize("source", [
    "{{ alert.asset.schema }}{{ alert.changes[0].from }}{{ alert.changes.0.to }}",
    "{{ alert.changes[1:] | length }}{{ alert.changes[-1].column }}{{ alert.asset.tags[0] }}",
    "{% for c in alert.changes if c.breaking %}{{ c.column }}{% else %}none{% endfor %}",
    "{{ alert.title.upper() }}{{ alert.items() | list | length }}{{ alert.get('nope') }}",
    "{{ alert.check.status if alert.check }}{{ alert.freshness.delay_hours if alert.freshness }}",
    "{% set alert = {'x': 1} %}{{ alert.x }}",  # the template's own alert: not checked
    "{% macro m(alert) %}{{ alert.anything }}{% endmacro %}",
    "{% for alert in [{'y': 1}] %}{{ alert.y }}{% endfor %}",  # a loop over something unknown
    "{% set ns = namespace(n=0) %}{% for c in alert.changes %}{% set ns.n = ns.n + 1 %}"
    "{{ loop.index }}{% endfor %}{{ ns.n }} {{ range(3) | join(',') }} {{ dict(a=1).a }}",
    "{% set sep = joiner(', ') %}{% for t in alert.asset.tags %}{{ sep() }}{{ t }}{% endfor %}",
])
def test_known_names_and_the_templates_own_names_compile(source: str) -> None:
    compile_template(source)


@pytest.mark.parametrize(("source", "tag"), [
    ('{% include "x.txt" %}', "include"),
    ('{% import "macros.txt" as m %}', "import"),
    ('{% from "macros.txt" import row %}', "from … import"),
    ('{% extends "base.txt" %}', "extends"),
])
def test_a_template_cannot_read_files(source: str, tag: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template("first line\n" + source)
    assert caught.value.line == 2
    assert f"'{{% {tag} %}}' is not available: a template cannot read other files" in str(
        caught.value)


# -- the sandbox -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [
    "{{ alert.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__['os'] }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ alert['__class__'] }}",
    "{{ self.__init__ }}",
    "{{ dict.mro() }}",
    "{% set a = '__cla' ~ 'ss__' %}{{ ''|attr(a) }}",
    "{{ ('__cla' ~ 'ss__') | attr }}",
    "{{ '{0.__class__.__mro__}'.format(alert) }}",
    "{{ '{0.__class__}'.format_map({'0': alert}) }}",
    "{{ '{x.__class__}'.format(x=cycler) }}",
    "{{ '%s' % alert.__class__ }}",
    "{{ alert.changes.append(1) }}{{ alert.update({}) }}",
    "{{ alert.asset.tags.pop() }}",
    "{{ [alert] | map(attribute='__class__') | list }}",
])
def test_the_sandbox_exposes_nothing(source: str, context: dict[str, Any]) -> None:
    try:
        text = render(source, context)
    except TemplateError as error:
        assert error.line == 1
        return
    # what renders at all shows nothing of Python's insides
    assert not any(word in text for word in ("class", "module", "function", "object", "<")), text


def test_a_render_error_names_its_line(context: dict[str, Any]) -> None:
    no_description = template_context(make_notification(make_alert(description=None)))
    error = fails("Title: {{ alert.title }}\n{{ alert.description.upper() }}", no_description)
    assert error.line == 2
    assert str(error) == "line 2: undefined value: 'None' has no attribute 'upper'"

    error = fails("a\nb\n{{ 1 / 0 }}", context)
    assert str(error) == "line 3: ZeroDivisionError: division by zero"

    error = fails("{% macro m(x) %}\n{{ x + 1 }}\n{% endmacro %}{{ m('a') }}", context)
    assert error.line == 2 and "TypeError" in str(error)

    error = fails("{{ alert.freshness.delay_hours }}", context)  # no freshness in this alert
    assert "undefined value" in str(error) and error.line == 1


def test_render_raises_only_template_errors() -> None:
    template = compile_template("{{ alert.title }}")
    for bad in ({}, {"alert": None}, {"alert": 3}, {"alert": {"title": Undefinable()}}):
        with pytest.raises(TemplateError):
            template.render(bad)


class Undefinable:
    def __str__(self) -> str:
        raise RuntimeError("cannot be shown")


def test_recursion_stops_with_a_template_error(context: dict[str, Any]) -> None:
    error = fails("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", context)
    assert "recursion" in str(error) and error.line == 1


# -- bounded ---------------------------------------------------------------------------------------


def test_the_sandbox_bounds_range(context: dict[str, Any]) -> None:
    error = fails("{% for i in range(10**9) %}x{% endfor %}", context)
    assert "MAX_RANGE (100000)" in str(error)


@pytest.mark.parametrize("source", [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% set a = range(100000) | list %}{% for i in a %}{% for j in a %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% for c in alert.changes recursive %}{{ loop(range(100000)) }}{% endfor %}",
])
def test_work_is_bounded(source: str, context: dict[str, Any]) -> None:
    started = time.monotonic()
    error = fails(source, context)
    assert time.monotonic() - started < 5
    assert "too much work" in str(error) or "recursion" in str(error)


@pytest.mark.parametrize("source", [
    "{{ 'x' * 10**10 }}",
    "{{ [0] * 10**10 }}",
    "{{ 10 ** 100000 }}",
    "{{ 'x' | center(10**10) }}",
    "{{ ''.ljust(10**10) }}",
    "{{ 'x' | indent(10**10, true) }}",
    "{{ ('x' * 1000) | replace('', 'y' * 10000) }}",
    "{{ range(100000) | join('x' * 100000) }}",
    "{{ (['x' * 1000000] * 10) | join }}",
    "{{ '-'.join(['x' * 1000000] * 10) }}",
    "{{ '{:>10000000000}'.format(1) }}",
    "{{ '%10000000000s' % 'a' }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}",
    "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ d('a', 64) }}",
])
def test_growth_is_bounded(source: str, context: dict[str, Any]) -> None:
    started = time.monotonic()
    error = fails(source, context)
    assert time.monotonic() - started < 2
    assert re.search(r"(grew|grow) beyond|would make a value of more than", str(error)), error


def test_the_output_is_cut_at_the_limit(context: dict[str, Any]) -> None:
    text = render("{% for i in range(100000) %}{{ alert.asset.name }}{% endfor %}", context)
    assert len(text) == MAX_OUTPUT and text.endswith("…")


def test_a_huge_constant_does_not_hang_compilation() -> None:
    started = time.monotonic()
    template = compile_template("{{ 'x' * 10**10 }}{{ 10 ** 10 ** 10 ** 10 }}")
    assert time.monotonic() - started < 1
    assert isinstance(template, Template)


# -- start-up --------------------------------------------------------------------------------------


def test_importing_the_module_does_not_import_jinja() -> None:
    code = "import armor_notify.templates, sys; assert 'jinja2' not in sys.modules, 'imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_fields_are_documented_in_one_line_each() -> None:
    assert list(FIELDS) == ["alert", "status", "action", "rule", "destination", "dedup_key",
                            "source", "link_text", "test", "message", "digest"]
    assert all(text and "\n" not in text for text in FIELDS.values())
