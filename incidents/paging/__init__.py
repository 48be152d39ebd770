"""Paging and notifications: who is told (decide), the outbox of Notification
rows (claim, retry, cancel), the channels (email, Slack, webhook), who is on call
(oncall), acknowledge links, the receivers of the incident's signals and the
Celery tasks."""
