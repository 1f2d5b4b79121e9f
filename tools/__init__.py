"""Developer tools: scripts (render_samples, kubernetes_schema) and helpers the tests and bench share (pgserver)."""
