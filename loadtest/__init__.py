"""Carrier simulators that place real-time calls over the network, and the load-test reports.

- ``loadtest.carriers``: ``place_call(session, base_url, CallPlan(...)) -> CallResult`` (fake Twilio and
  fake Telnyx, signed webhooks, media sockets, play-out model, latency probes) and ``TelnyxApi`` (the
  REST hang-up endpoint the gateway calls).
- ``loadtest.runner``: ``run_load(LoadConfig) -> LoadReport``, ``run_steps`` (stepped concurrency),
  ``ratio_to_baseline``.
- ``loadtest.report``: terminal table, ``report.json``, ``report.html`` with PNG plots.
- ``loadtest.baseline``: the minimal echo server every figure is compared with.

Nothing here imports the gateway: it is driven over the network, as a carrier drives it.
"""
