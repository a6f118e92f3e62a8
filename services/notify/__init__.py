"""Notifications: alert transitions to webhooks and e-mail, outside the evaluation (issue 16).

The alert engine appends one ``alert`` event per transition; the notifier (its own loop:
``urbanpulse notify run``, or a thread of ``urbanpulse up``) reads those events after its cursor,
turns each into one outbox row per matching subscription (``notifications``, unique per alert
transition, subscription and channel, so a restart enqueues nothing twice), and delivers the due
rows with retries and exponential backoff; a row out of attempts is a dead letter an operator
lists and replays. An alert left unacknowledged for a subscription's ``escalate_after_s`` gets
one more row, marked ``escalated``.

Pure parts: :mod:`.model` (subscriptions, filters, payloads, backoff) and :mod:`.signing` (the
webhook signature). I/O shells: :mod:`.channels` (HTTP, SMTP) and :mod:`.notifier` (the loop).

May import ``services.storage`` and ``services.kpi.alerts``; never the API.
"""
