"""Renderers: turn records into text for people (table) or machines (JSON)."""
