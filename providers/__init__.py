"""Voice-AI provider adapters behind one interface (``providers.base``), plus simulators."""
