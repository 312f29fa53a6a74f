"""Live activity subscriptions reading the `<prefix>activity` stream (issue: live activity). Not built yet."""
