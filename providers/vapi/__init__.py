"""Vapi adapter over the ``vapi.websocket`` call transport."""
