"""The servers tokenrelay is measured against: each a tiny app served by the same uvicorn settings.

Every peer answers ``GET /stream?n=N&interval_ms=MS&token=T`` with ``n`` deltas ``{"delta": T}`` on the same
absolute schedule (:func:`bench.peers._tokens.tokens`), then ``{"done": true}``.
"""
