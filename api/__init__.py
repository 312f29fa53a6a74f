"""The authenticated GraphQL API (issue: GraphQL API). Not built yet: no route is mounted."""
