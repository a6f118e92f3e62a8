"""Reads past one machine: what a service needs to know about a PostgreSQL streaming standby
(rehearsed in tests/deploy/test_replica.py; the API's routing of reads to it is not wired yet)."""
