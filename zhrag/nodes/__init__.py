"""Graph nodes: ``retrieve``, ``judge``, ``requery`` and ``answer``.

Each is a function ``(state, runtime) -> partial state update`` that reads its configuration from
``runtime.context`` and records its wall time in ``timings_ms``. Nodes never import ``zhrag.graph``.
"""
