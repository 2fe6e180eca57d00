"""Strawberry extensions on every operation: who is calling, and may they now."""
