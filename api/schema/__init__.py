"""The GraphQL schema: Query, Mutation, and the extensions every request runs through."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, ParserCache, QueryDepthLimiter, ValidationCache

from api.schema.mutation import Mutation
from api.schema.query import Query
from api.schema.subscription import Subscription
from contact_monitor.core.errors import UserError

MAX_DEPTH = 10


def should_mask(error: GraphQLError) -> bool:
    """Our own errors and GraphQL's syntax/validation errors are shown; anything else is internal."""
    original = error.original_error
    return original is not None and not isinstance(original, UserError | GraphQLError)


schema = strawberry.Schema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    # Factories, built per operation; the parser and validation caches live at module level.
    extensions=[
        lambda: ParserCache(maxsize=1000),
        lambda: ValidationCache(maxsize=1000),
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaskErrors(should_mask_error=should_mask, error_message="Internal server error"),
    ],
)
