"""Placement templates: hostile ones are refused when saved (400 naming the variant), what slips
past renders without reaching Python's internals, a template that fails answers without its
HTML instead of a 500, and visitors' traits are always HTML-escaped."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Engine
from tests.helpers import bearer, decide, eventually, signed, wait_catalog

HOSTILE = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "'__subclasses__'"),
    ("{{ cycler.__init__.__globals__.os }}", "'__globals__'"),
    ("{{ self._TemplateReference__context }}", "'_TemplateReference__context'"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "'__globals__'"),
    ("{{ traits['__class__'] }}", "'__class__'"),
    ("{{ plan|attr('__class__') }}", "'__class__'"),
    ("{{ first_name|safe }}", "turns HTML escaping off"),
    ("{% autoescape false %}{{ first_name }}{% endautoescape %}", "turns HTML escaping off"),
]


def put(engine: Engine, key: str, template: str) -> Any:
    body = {"variants": [{"key": "only", "template": template}]}
    return engine.client.put(f"{engine.url}/v1/placements/{key}", json=body, headers=bearer())


@pytest.mark.parametrize(("template", "named"), HOSTILE)
def test_hostile_templates_are_refused_when_saved(
    engine: Engine, template: str, named: str
) -> None:
    answer = put(engine, "hero", template)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_placement"
    message = answer.json()["message"]
    assert message.startswith("$: `template` of variant 'only'") and named in message, message


def test_templates_render_sandboxed_and_escaped(engine: Engine) -> None:
    hostile = "<script>alert(document.cookie)</script>"
    engine.post("/v1/identify", {"userId": "ada", "traits": {"first_name": hostile, "plan": "x"}})
    eventually(lambda: engine.client.get(f"{engine.url}/v1/profiles/user_id:ada",
                                         headers=bearer()).status_code == 200)  # fmt: skip
    templates = {
        "named": "<p>Hi {{ first_name }} / {{ traits.first_name }}</p>",
        # A name built at render time: the sandbox gives nothing for it.
        "dynamic": '{% set n = "_" ~ "_class__" %}<b>{{ plan|attr(n) }}{{ "s"|attr(n) }}</b>',
        "failing": "<p>{{ 1 / 0 }}</p>",  # fails at render time: answered without the HTML
    }
    for key, template in templates.items():
        assert put(engine, key, template).status_code == 201
    for key in templates:
        wait_catalog(engine, key)

    def rendered() -> dict[str, Any] | None:
        decisions = decide(engine, *templates, **signed(engine, "ada"))
        return decisions if "&lt;script&gt;" in decisions["named"]["content"] else None

    shown = eventually(rendered)
    escaped = "&lt;script&gt;alert(document.cookie)&lt;/script&gt;"
    assert shown["named"]["content"] == f"<p>Hi {escaped} / {escaped}</p>"
    assert shown["dynamic"]["content"] == "<b></b>"
    assert shown["failing"]["content"] == "" and shown["failing"]["variant"] == "only"
