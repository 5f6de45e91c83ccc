"""Roles: one package each; the supervisor imports them by name only."""
