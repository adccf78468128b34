"""Durable jobs: a database row first, then rq (or a thread of the server), one background loop per process."""
