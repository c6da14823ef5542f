"""Telemetry: named events with measurements and metadata, delivered to attached handlers.

Events follow the seeds' naming, dotted: ``dspex.router.route``, ``dspex.lm.request``,
``dspex.pool.checkout``... A handler is a plain callable
``handler(event, measurements, metadata)`` attached to an event-name prefix::

    handle = dspex.telemetry.attach("dspex.lm", print)
    ...
    dspex.telemetry.detach(handle)

Emitting with no handler attached costs one dict lookup. A handler that raises is logged
and never breaks the call that emitted the event.
"""

from dspex.telemetry.events import (
    Handler,
    attach,
    attached,
    capture,
    detach,
    emit,
    has_handlers,
    span,
)

__all__ = ["Handler", "attach", "attached", "capture", "detach", "emit", "has_handlers", "span"]
