"""Docker HEALTHCHECK: GET /health on this container, with the basic auth the server requires (if any)."""

import base64
import os
import sys
import urllib.request

request = urllib.request.Request(f"http://127.0.0.1:{os.environ.get('PORT', '9090')}/health")
user = os.environ.get("BASIC_AUTH_USER", "")
if user:
    secret = f"{user}:{os.environ.get('BASIC_AUTH_PASS', '')}".encode()
    request.add_header("Authorization", "Basic " + base64.b64encode(secret).decode())
try:
    with urllib.request.urlopen(request, timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
