"""Ingestion: what Sentry SDKs send (envelopes, events) and the errors it is grouped into."""
