"""Strawberry types of the GraphQL API (issue: GraphQL API). Not built yet."""
