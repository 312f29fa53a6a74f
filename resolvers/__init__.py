"""GraphQL resolvers: read and change data through `contact_monitor.storage`, never `db[...]`."""
