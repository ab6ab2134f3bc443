"""Talking to the Kubernetes API: one client factory, paginated Pod lists, rate limits."""
