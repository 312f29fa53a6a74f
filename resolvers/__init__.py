"""GraphQL resolvers over `contact_monitor.storage` (issue: GraphQL API). Not built yet."""
