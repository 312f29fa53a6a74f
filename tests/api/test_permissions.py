"""Every entry point of the schema declares the role it needs (a Strawberry permission class)."""

import pytest

from api.context import Context
from api.permissions import RolePermission
from api.schema import schema

ROOTS = ("Query", "Mutation", "Subscription")
# Reading the webhooks' configuration and delivery log needs admin: their URLs may carry tokens.
ADMIN_QUERIES = {"webhooks", "webhook_deliveries"}


def root_fields():
    for root in ROOTS:
        for field in schema.get_type_by_name(root).fields:
            yield root, field


def roles(field):
    return {p.role for p in field.permission_classes if issubclass(p, RolePermission)}


def test_every_root_field_declares_exactly_one_role():
    undeclared = [f"{root}.{field.name}" for root, field in root_fields() if len(roles(field)) != 1]
    assert not undeclared, f"fields without a role: {undeclared}"


def test_reading_needs_read_and_changing_needs_write_or_admin():
    for root, field in root_fields():
        if root == "Mutation":
            assert roles(field) <= {"write", "admin"}, field.name
        elif field.name in ADMIN_QUERIES:
            assert roles(field) == {"admin"}, field.name
        else:
            assert roles(field) == {"read"}, field.name


@pytest.mark.parametrize(
    ("role", "operation", "code"),
    [
        ("none", "{ tags { name } }", "FORBIDDEN"),
        ("read", "{ tags { name } }", None),
        ("read", 'mutation { tagContact(id: "x", add: ["a"]) { id } }', "FORBIDDEN"),
        ("write", 'mutation { updateField(alias: "email", unique: true) { alias } }', "FORBIDDEN"),
    ],
)
async def test_the_declared_role_is_enforced(harness, role, operation, code):
    context = Context(services=harness.services, hub=harness.hub, role=role, key_name="k")
    result = await schema.execute(operation, context_value=context)
    if code is None:
        assert result.errors is None
    else:
        assert result.errors and result.errors[0].extensions["code"] == code
        assert f"{role}" in result.errors[0].message
