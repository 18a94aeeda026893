"""Tests of the store room (issue 29): reads, scored films, settings; SQLite always, PostgreSQL by URL."""
