"""The agent: this machine's devices served over gRPC to ``remote://`` clients (see ``server`` and
``agent.proto``; the client is ``gatewright.devices.remote``)."""
