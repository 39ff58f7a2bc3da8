"""Load, fault and soak scenarios against real tokgen processes on loopback.

``python -m loadtests --scenario NAME`` starts its own Redis, ``tokgen serve`` and
``tokgen worker`` processes (``cluster``), drives them with real asyncio gRPC clients
(``calls``), and prints a JSON summary (``stats``). Scenarios: ``scenarios`` (smoke,
ramp, flood, mixed) and ``faults`` (worker kills, Redis restarts, SIGTERM, disconnect
storms, overload). Every scenario is bounded in requests and time and asserts what it
claims; a failed assertion exits 1.
"""
