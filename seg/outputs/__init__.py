"""Outputs for people: Markdown tables, overlays and plots, from numbers computed elsewhere (no math here)."""
