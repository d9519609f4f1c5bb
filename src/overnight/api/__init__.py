"""HTTP: one ASGI app, one module per dialect. Dialects only translate
between their wire shapes and `overnight.service`."""
