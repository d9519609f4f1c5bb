"""Pure domain code: no I/O, no async, frozen values. Everything above it
(service, runner, store, api) speaks in these types."""
