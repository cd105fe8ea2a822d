"""Carrier simulators that place real-time calls over the network, and the load-test reports."""
