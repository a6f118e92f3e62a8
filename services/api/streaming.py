"""A streaming response that closes its iterator as soon as it ends, a client's disconnect
included.

Starlette stops iterating a sync iterator when the client goes away, but leaves it open until
the garbage collector finds it: an export stopped midway held its pooled connection, and its
query (a COPY blocked on a full socket), for a minute or more.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ClosingStreamingResponse(StreamingResponse):
    def __init__(self, content: Iterator[bytes], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._content, "close", None)
            if close is not None:
                # Shielded: a disconnect arrives as a cancellation, which would cancel this too.
                # No thread is inside the iterator by now: Starlette waits for its next().
                with anyio.CancelScope(shield=True):
                    await run_in_threadpool(close)
