"""Webhooks: signing, where they may go, sending them, and managing endpoints.

    signing.py    Standard Webhooks secrets and signatures
    targets.py    resolve an endpoint's host, refuse private addresses, pin one
    posting.py    one attempt: a POST to the pinned address, no redirects
    sender.py     the loop that claims due deliveries, attempts them, records them
    endpoints.py  the use cases: add, list, remove, rotate, enable, the log, config

The event itself and the retry schedule are pure, in `domain/webhooks.py`.
"""
