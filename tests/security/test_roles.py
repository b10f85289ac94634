"""The dashboard's half of the permission matrix: every dashboard operation of
``/openapi.json`` that names a scope (``x-kairos-scope``) is called by a signed-in user of each
role; it answers when the role holds the scope and is a 403 page when it does not."""

from __future__ import annotations

import re

from edge.access.scopes import ROLES, for_role
from tests.conftest import SECRET_KEY, Engine
from tests.edge.test_audit import logged
from tests.helpers import add_user, signed_in
from tests.security.test_route_access import SAMPLES


def _dashboard_operations(engine: Engine) -> list[tuple[str, str, str]]:
    document = engine.client.get(engine.url + "/openapi.json").json()
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            security = [name for entry in operation["security"] for name in entry]
            if "x-kairos-scope" in operation and "dashboardSession" in security:
                found.append((method.upper(), path, operation["x-kairos-scope"]))
    return found


def test_every_dashboard_operation_is_allowed_exactly_to_the_roles_holding_its_scope(
    engine: Engine,
) -> None:
    operations = _dashboard_operations(engine)
    assert len(operations) > 10  # the document was read
    for role in ROLES:
        email = f"{role}@shop.example"
        add_user(engine, email, role)
        holds = for_role(email, role)
        with signed_in(engine, email, "a long password 1") as browser:
            for method, path, scope in operations:
                url = re.sub(r"\{([^}]+)\}", lambda m: SAMPLES[m.group(1)], path)
                answer = browser.request(method, url)  # a form without its CSRF token
                where = (role, method, path, scope)
                if holds.allows(scope):
                    assert answer.status_code not in (303, 403), (*where, answer.text[:300])
                    assert answer.status_code < 500, (*where, answer.text[:300])
                else:
                    assert answer.status_code == 403, (*where, answer.text[:300])
                    assert "text/html" in answer.headers["content-type"]


def test_user_changes_are_audited_without_the_password_or_its_hash(engine: Engine) -> None:
    add_user(engine, "ana@shop.example", "viewer", "correct horse battery")
    changed = engine.client.put(engine.url + "/v1/users/ana@shop.example", json={"role": "editor"},
                                headers={"Authorization": f"Bearer {SECRET_KEY}"})  # fmt: skip
    assert changed.status_code == 200, changed.text
    entries = logged(engine, 2, resource="user", key="ana@shop.example")
    assert [e["action"] for e in entries] == ["update", "create"]  # newest first
    assert entries[0]["after"]["role"] == "editor" and entries[0]["before"]["role"] == "viewer"
    assert "argon2" not in str(entries) and "correct horse" not in str(entries)
