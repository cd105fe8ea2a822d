"""Carrier simulators that place real-time calls over the network, and the load-test reports.

- ``loadtest.carriers``: ``place_call(session, base_url, CallPlan(...)) -> CallResult`` (fake Twilio and
  fake Telnyx, signed webhooks, media sockets, play-out model, latency probes) and ``TelnyxApi`` (the
  REST hang-up endpoint the gateway calls).
- ``loadtest.runner``: ``run_load(LoadConfig) -> LoadReport``, ``run_steps`` (stepped concurrency),
  ``ratio_to_baseline``.
- ``loadtest.timehist``: latency and lateness histograms per second of run time (memory that does
  not grow with the number of samples).
- ``loadtest.report``: terminal table, ``report.json``, ``report.html`` with PNG plots.
- ``loadtest.baseline``: the minimal echo server every figure is compared with.

The gateway is driven over the network, as a carrier drives it; nothing here imports its call
path. In-process beside the calls run only the shared uvloop runner (``gateway.event_loop``) and,
in ``voicegw bench``, the relaying provider simulator (``providers.simulators``).
"""
