"""Webhooks: a project's hooks (GitLab's project hooks API), and telling them when an error is new,
comes back, or floods (from the table's DynamoDB Stream, never inside a request)."""
