"""The zhrag question-answering graph: state, runtime context and the A0/A1/A2 builder.

Import ``build_graph`` from ``zhrag.graph.builder``; importing this package alone stays cheap.
"""
