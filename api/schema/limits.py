"""What one GraphQL request may cost, decided before anything runs.

- Strawberry's own limiters bound the text: aliases (`MAX_ALIASES`), tokens (`MAX_TOKENS`), depth.
- `QueryCost` bounds the work: every object a field can return counts, and page sizes multiply
  through nested connections (a page of 100 contacts with `hits(first: 100)` is 10,000 hits;
  with their edges and nodes the query costs 30,300).
  Variables are read with their values, so `first: $n` costs what `$n` says.
- `DocumentCache` keeps parsed and validated documents by query text, bounded by the bytes of
  the texts it holds and by entries; a document that fails validation is not kept (its errors
  would be the larger part), so unique long or invalid queries cannot fill the memory.
- `InternalErrorMask`: internal errors are masked and carry `INTERNAL_SERVER_ERROR`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    parse,
)
from strawberry.extensions import MaskErrors, SchemaExtension

from contact_monitor.core.errors import BadUserInput
from resolvers.pagination import DEFAULT_PAGE, MAX_PAGE, MAX_TAG_PAGE, TAG_PAGE

MAX_ALIASES = 20
MAX_TOKENS = 2_000
MAX_COST = 50_000
# Paginated fields: their page when `first` is not given, and the largest `first` they accept
# (what a `first` the cost cannot read, such as a variable without a value, counts as).
PAGES = {
    "contacts": (DEFAULT_PAGE, MAX_PAGE),
    "hits": (DEFAULT_PAGE, MAX_PAGE),
    "timeline": (DEFAULT_PAGE, MAX_PAGE),
    "tags": (TAG_PAGE, MAX_TAG_PAGE),
}
# Fields that return lists without a `first` argument, and how many items they return at most
# (or, for the registry lists, a generous estimate).
LIST_SIZES = {
    "utmTags": 100,
    "ipAddresses": 100,
    "devices": 20,
    "contactsByFingerprint": 100,
    "fields": 100,
    "forms": 100,
}
# A parsed document takes tens of times its text: 1 MiB of text is some tens of MiB at most.
CACHE_BYTES = 1024 * 1024
CACHE_ENTRIES = 1000
MAX_CACHED_QUERY_BYTES = 64 * 1024


def _as_count(value: Any) -> int | None:
    """What GraphQL's Int would make of a variable's value (100.0 is 100), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _page_size(field: FieldNode, variables: Mapping[str, Any]) -> int:
    """How many items a field can return per parent; when unsure, the most it could."""
    name = field.name.value
    default, largest = PAGES.get(name, (LIST_SIZES.get(name, 1), MAX_PAGE))
    first = next((a.value for a in field.arguments or () if a.name.value == "first"), None)
    if first is None:
        return default
    if isinstance(first, IntValueNode):
        return max(int(first.value), 0)
    if isinstance(first, VariableNode):
        given = variables.get(first.name.value)  # given, else its default, else null
        if given is None:  # `first: null` is the default page
            return default
        count = _as_count(given)
        if count is not None:
            return max(count, 0)
    return largest


def _defaults(operation: OperationDefinitionNode) -> dict[str, Any]:
    """The operation's variable defaults that are integers (the rest the cost reads as unknown)."""
    found: dict[str, Any] = {}
    for definition in operation.variable_definitions or ():
        if isinstance(definition.default_value, IntValueNode):
            found[definition.variable.name.value] = int(definition.default_value.value)
    return found


@dataclass
class _Walk:
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]

    def cost(self, selection_set: SelectionSetNode | None, multiplier: int, seen: frozenset[str]) -> int:
        """Objects the selection can return, `multiplier` times over."""
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.selection_set is None:
                    continue  # a scalar: part of its object
                objects = multiplier * _page_size(selection, self.variables)
                total += objects + self.cost(selection.selection_set, objects, seen)
            elif isinstance(selection, InlineFragmentNode):
                total += self.cost(selection.selection_set, multiplier, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in seen:  # cycles are refused by validation
                    total += self.cost(fragment.selection_set, multiplier, seen | {name})
            if total > MAX_COST:
                return total  # no need to count further
        return total


def query_cost(document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any]) -> int:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name is not None and o.name.value == operation_name]
    if not operations:
        return 0
    operation = operations[0]
    walk = _Walk(fragments, {**_defaults(operation), **variables})
    return walk.cost(operation.selection_set, 1, frozenset())


class QueryCost(SchemaExtension):
    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            cost = query_cost(context.graphql_document, context.operation_name, context.variables or {})
            if cost > MAX_COST:
                raise BadUserInput(
                    f"query cost {cost} exceeds the limit of {MAX_COST}: every object counts and "
                    "page sizes multiply through nested connections; ask for smaller pages"
                )
        yield


class InternalErrorMask(MaskErrors):
    """Masked errors say what they are: INTERNAL_SERVER_ERROR, never a user error's code."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL_SERVER_ERROR"}
        return masked


@dataclass
class _Entry:
    document: DocumentNode
    errors: list[GraphQLError] | None = None


class DocumentStore:
    """Parsed documents and their validation errors by query text, least recently used dropped
    first once the texts held pass `max_bytes`. A text over `max_query_bytes` is never kept."""

    def __init__(
        self,
        max_bytes: int = CACHE_BYTES,
        max_query_bytes: int = MAX_CACHED_QUERY_BYTES,
        max_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_query_bytes = max_query_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self.entries: OrderedDict[tuple[str, tuple[tuple[str, Any], ...]], _Entry] = OrderedDict()

    def parse(self, query: str, options: Mapping[str, Any]) -> _Entry:
        key = (query, tuple(sorted(options.items())))
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            return entry
        entry = _Entry(parse(query, **options))
        size = len(query.encode("utf-8", "surrogatepass"))
        if size <= self.max_query_bytes:
            self.entries[key] = entry
            self.bytes += size
            while self.bytes > self.max_bytes or len(self.entries) > self.max_entries:
                (old_query, _), _ = self.entries.popitem(last=False)
                self.bytes -= len(old_query.encode("utf-8", "surrogatepass"))
        return entry

    def forget(self, query: str, options: Mapping[str, Any]) -> None:
        key = (query, tuple(sorted(options.items())))
        if self.entries.pop(key, None) is not None:
            self.bytes -= len(query.encode("utf-8", "surrogatepass"))


class DocumentCache(SchemaExtension):
    """Strawberry's ParserCache and ValidationCache in one, bounded by bytes (`DocumentStore`)."""

    def __init__(self, store: DocumentStore) -> None:
        super().__init__()
        self.store = store
        self.entry: _Entry | None = None

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None:
            self.entry = self.store.parse(context.query, context.parse_options)
            context.graphql_document = self.entry.document
        yield

    def on_validate(self) -> Iterator[None]:
        from strawberry.schema.schema import validate_document  # not at import: a cycle in strawberry

        context = self.execution_context
        if self.entry is not None and context.graphql_document is self.entry.document:
            if self.entry.errors is None:
                self.entry.errors = validate_document(
                    context.schema._schema, self.entry.document, context.validation_rules
                )
            context.pre_execution_errors = self.entry.errors
            if self.entry.errors and context.query is not None:
                self.store.forget(context.query, context.parse_options)
        yield
