"""The GraphQL schema: Query, Mutation, and the extensions every request runs through."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter

from api.schema.limits import (
    MAX_ALIASES,
    MAX_TOKENS,
    DocumentCache,
    DocumentStore,
    InternalErrorMask,
    QueryCost,
)
from api.schema.mutation import Mutation
from api.schema.query import Query
from api.schema.subscription import Subscription
from contact_monitor.core.errors import UserError

MAX_DEPTH = 10


def should_mask(error: GraphQLError) -> bool:
    """Our own errors and GraphQL's syntax/validation errors are shown; anything else is internal."""
    original = error.original_error
    return original is not None and not isinstance(original, UserError | GraphQLError)


# Parsed and validated documents of this process, bounded by bytes (api/schema/limits.py).
documents = DocumentStore()

schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    # Factories, built per operation.
    extensions=[
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: DocumentCache(documents),
        QueryCost,
        lambda: InternalErrorMask(should_mask_error=should_mask, error_message="Internal server error"),
    ],
)
