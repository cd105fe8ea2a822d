"""Bolna adapter over its per-conversation agent WebSocket (``/chat/v1/{agent_id}``)."""
