"""Squall: the Tornado application, its configuration and its services."""
