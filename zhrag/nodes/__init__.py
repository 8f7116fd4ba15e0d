"""Graph nodes: ``retrieve``, ``judge``, ``requery`` and ``answer``.

Each is a function ``(state: GraphState, runtime: Runtime[Context]) -> partial state update`` that reads its
configuration from ``runtime.context`` and records its wall time in ``timings_ms``. Of the graph package, nodes
import only ``zhrag.graph.state`` and ``zhrag.graph.context`` (never the builder).
"""
