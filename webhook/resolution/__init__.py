"""Deciding: who owns a Pod (the model, the rule table, the resolver)."""
