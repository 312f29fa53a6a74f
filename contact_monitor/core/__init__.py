"""The domain core: contact fields, tags, identity and merges, contact changes, activity kinds and
the activity stream, API keys, client addresses, and the `Services` container.

Every adapter (tracking endpoints in `ingest/`, GraphQL in `api/` + `resolvers/`, the tracker in
`mtc_js/`) calls these operations; the core imports only `contact_monitor.storage`,
`contact_monitor.settings` and `contact_monitor.text` (enforced by import-linter, see
pyproject.toml).
"""
