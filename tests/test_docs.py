"""The plugin documentation keeps up with the code (datasette's habit).

- every hook in ``armor_notify/hookspecs.py`` has a section in ``docs/plugins.md`` headed by its
  exact signature, with an example, and the reference documents no hook that does not exist
  (the matching ``test_hook_<name>`` check lives in ``tests/test_plugins.py``);
- every field of ``DestinationType`` and ``Notification``, and every test of the conformance
  suite, is documented;
- every code block that names a file of an example plugin is an exact excerpt of it, and the
  smallest plugin (examples/armor-notify-post) is shown whole, first.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from armor_notify import hookspecs
from armor_notify.destinations import DestinationType, Notification
from armor_notify.testing import DestinationConformance

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "plugins.md"
HOOKS = [name for name, fn in vars(hookspecs).items()
         if callable(fn) and hasattr(fn, "armor_notify_spec")]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def hook_reference() -> str:
    text = doc()
    assert "\n## Hook reference\n" in text
    return text.split("\n## Hook reference\n", 1)[1].split("\n## ", 1)[0]


def signature(name: str) -> str:
    """``name(arg: Type, ...) -> Return`` as written in hookspecs.py (annotations are strings)."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = []
    for p in sig.parameters.values():
        text = f"{p.name}: {p.annotation}" if p.annotation is not p.empty else p.name
        if p.default is not p.empty:
            text += f" = {p.default!r}"
        params.append(text)
    return f"{name}({', '.join(params)}) -> {sig.return_annotation}"


def sections(text: str) -> dict[str, str]:
    """``### `heading` `` → the text up to the next heading."""
    found = {}
    for match in re.finditer(r"^### `([^`]+)`\n(.*?)(?=^### |\Z)", text, re.M | re.S):
        found[match.group(1)] = match.group(2)
    return found


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_exact_signature_and_an_example(hook: str) -> None:
    documented = sections(hook_reference())
    sig = signature(hook)
    assert sig in documented, (
        f"docs/plugins.md has no '### `{sig}`' section under '## Hook reference'; "
        f"documented: {list(documented)}")
    body = documented[sig]
    assert "Called" in body, f"say when {hook} is called"
    examples = [code for lang, code in BLOCK.findall(body) if lang == "python"]
    assert any("@hookimpl" in code and f"def {hook}(" in code for code in examples), (
        f"the {hook} section needs a python example implementing it")


def test_the_reference_documents_only_hooks_that_exist() -> None:
    names = [heading.split("(", 1)[0] for heading in sections(hook_reference())]
    assert sorted(names) == sorted(HOOKS), f"documented {names}, hooks are {HOOKS}"


@pytest.mark.parametrize("cls", [DestinationType, Notification])
def test_every_field_plugins_use_is_documented(cls: type) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    names += [n for n, v in vars(cls).items() if isinstance(v, property) and n != "title"]
    rows = [line for line in doc().splitlines() if line.startswith("| `")]
    missing = [n for n in names if not any(line.startswith(f"| `{n}` |") for line in rows)]
    assert not missing, f"docs/plugins.md lacks a table row for {cls.__name__} fields {missing}"


def test_every_conformance_test_is_listed() -> None:
    tests = [n for n in dir(DestinationConformance) if n.startswith("test_")]
    missing = [n for n in tests if f"| `{n}` |" not in doc()]
    assert not missing, f"docs/plugins.md does not list the conformance tests {missing}"


def test_code_naming_a_file_is_an_exact_excerpt_of_it() -> None:
    excerpts = 0
    for _, code in BLOCK.findall(doc()):
        first, _, rest = code.partition("\n")
        match = re.fullmatch(r"# (examples/\S+)", first.strip())
        if not match:
            continue
        path = ROOT / match.group(1)
        assert path.is_file(), f"docs/plugins.md quotes {match.group(1)}, which does not exist"
        assert rest in path.read_text(encoding="utf-8"), (
            f"the excerpt of {match.group(1)} in docs/plugins.md no longer matches the file: "
            f"update it\n{rest[:400]}")
        excerpts += 1
    assert excerpts >= 5


def test_the_plugin_docs_start_with_the_smallest_plugin_quoted_whole() -> None:
    path = ROOT / "examples" / "armor-notify-post" / "armor_notify_post.py"
    source = path.read_text(encoding="utf-8")
    first = doc().split("\n## ", 2)[1]
    assert first.startswith("The smallest destination\n"), "docs/plugins.md must start with it"
    quoted = [code for _, code in BLOCK.findall(first)
              if code.startswith("# examples/armor-notify-post/armor_notify_post.py\n")]
    assert quoted == [f"# examples/armor-notify-post/armor_notify_post.py\n{source}"], (
        "docs/plugins.md must show the whole of armor_notify_post.py, as it is")
    lines = [line for line in source.splitlines() if line.strip()]
    assert len(lines) <= 30, f"the smallest plugin has grown to {len(lines)} lines"


def test_the_readme_points_to_the_plugin_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    plugins = readme.split("\n## Plugins\n", 1)[1].split("\n## ", 1)[0]
    assert "docs/plugins.md" in plugins
    reference = plugins.split("\n### Hook reference\n", 1)[1]
    assert "docs/plugins.md#hook-reference" in reference
    for hook in HOOKS:
        assert f"`{hook}(" in reference, f"README's hook reference does not name {hook}"


def test_relative_links_in_the_plugin_docs_exist() -> None:
    for target in re.findall(r"\]\((\.\./[^)#]+)", doc()):
        assert (DOC.parent / target).exists(), f"docs/plugins.md links to missing {target}"


def test_the_readme_tour_config_is_valid_and_routes_the_sample_alert() -> None:
    from armor_notify.api import Notifier

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = readme.split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    block = tour.split("```yaml\n", 1)[1].split("```", 1)[0]
    environ = {"PAGERDUTY_INTEGRATION_KEY": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
               "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/tourtourtour"}
    with Notifier.from_yaml(block, environ=environ) as notifier:
        (alert,) = notifier.read_alerts(str(ROOT / "examples" / "alerts" / "schema_change_breaking.json"))
        routes = [(r.destination, r.rule) for r in notifier.route(alert)]
    assert routes == [("pagerduty-data-platform", "Production Breaking Changes"),
                      ("slack-data-incidents", "Production Breaking Changes")]
    assert "bash examples/run.sh" in readme and "## The manual" in readme


@pytest.mark.slow
def test_the_pytest_mock_example_runs_against_the_webhook_example(tmp_path: Path) -> None:
    """The "Patching with pytest-mock" example is real: it passes against the webhook plugin."""
    text = doc()
    section = text[text.index("**Patching with pytest-mock.**"):]
    match = BLOCK.search(section)
    assert match is not None and match.group(1) == "python"
    (tmp_path / "test_patching.py").write_text(match.group(2), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples" / "armor-notify-webhook")}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(tmp_path / "test_patching.py")], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
