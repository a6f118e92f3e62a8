"""Reads past one machine: what a service needs to know about a PostgreSQL streaming standby
(``lag``), and which of primary and standby the API reads from (``routing``)."""
