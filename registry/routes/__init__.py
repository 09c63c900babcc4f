"""The registry's HTTP routes, one router per resource; ``registry.api`` composes the app.

``agents``: agent instances. ``sessions``: sessions and their leases. ``events``: the event
streams (a session's log, the change feed). ``ops``: health, liveness, metrics. ``common``:
what they share (the app's services, the peer check of writes, the error body).
"""
