"""Registers the network keeps with history: units, schools, tags (who/when/letter for every change)."""
