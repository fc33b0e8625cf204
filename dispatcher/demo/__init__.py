"""``dispatcher demo``: the whole system in one process, with a scripted story.

A real dispatcher on the embedded default (memory hot store, SQLite in a temp dir) serves
gRPC on a loopback port; three simulated clusters of unequal capacity hold real
``AgentService.Connect`` streams and run the tasks routed to them on simulated workers; a
load generator calls Route and Settle over gRPC. A script then exhausts a quota pool
(spillover), makes an agent version fail (breaker trip and fallback) and restarts a cluster
(session handover), while a live view shows it. ``--duration N --json`` runs headless and
prints a summary.
"""
