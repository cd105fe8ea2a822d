"""Retell adapter over its legacy audio WebSocket (deprecated by Retell; see ``client``)."""
