"""Helpers shared by the test modules (none of them is a test): clients of the server
(clients, stream_requests, sockets), child processes (procs, commands, scaleout, pg, pg_cluster,
nginx, storm_client), Chromium (browser), Web Push (push_service), the notification streams
(streams), metrics (metrics), routes (routes) and chat checks (checks)."""
