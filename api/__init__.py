"""The authenticated GraphQL API at /graphql: `api.app` (HTTP, keys), `api.schema` (types)."""
