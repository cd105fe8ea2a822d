"""voicegw's server: carrier webhooks and media sockets, the call session, audio, internal endpoints."""
