"""The image's healthcheck: exit 0 when the URL answers 2xx within 4 s (no curl in the image)."""

import sys
import urllib.request

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/healthz"
try:
    with urllib.request.urlopen(URL, timeout=4) as response:  # noqa: S310 (a fixed local URL)
        sys.exit(0 if 200 <= response.status < 300 else 1)
except OSError as exc:
    print(f"healthcheck: {URL}: {exc}", file=sys.stderr)
    sys.exit(1)
