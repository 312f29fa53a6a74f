"""Live activity: one reader per process follows the `<prefix>activity` stream and fans events out
to bounded per-subscription queues (`hub`); `feed` adds filters, resume and markers; `shared`
groups the subscriptions of one operation so that each event is executed and sent once for all;
`online` counts visitors online once a second per window for the whole process."""
