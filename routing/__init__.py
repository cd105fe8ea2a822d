"""Choosing providers for a call: pure strategies, health board, circuit breakers."""
