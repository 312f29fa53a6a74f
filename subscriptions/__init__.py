"""Live activity: one reader per process follows the `<prefix>activity` stream and fans events out
to bounded per-subscription queues (`hub`); `feed` adds filters, resume and markers."""
