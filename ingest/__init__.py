"""Public tracking ingest: /mtracking.gif, /mtc/event and /mtc.

Data flow: routes (HTTP) -> payload/hit (parse, pure) -> policy -> identity -> pipeline (store,
publish). `ingest.pipeline` owns the order of the steps.
"""
