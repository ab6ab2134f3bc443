"""Serving: one AdmissionReview in, one answer out (transport, codec, handler, patch)."""
