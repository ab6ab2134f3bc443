"""Certificates: generation, the self-managed CA, hot reload of the serving pair."""
