"""A logging filter that masks secrets wherever they appear in a log line.

Connectors pass tokens around in headers and bodies; this filter is the safety net under
``connectors/http.py``'s own redaction, applied to every handler in settings.LOGGING.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # Authorization headers of any scheme, and Qonto's "{slug}:{secret}" API key.
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer |token |basic )?)[^\s'\",}]+"),
    # key=value / "key": "value" pairs whose key names a secret.
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|secret|password|api_key|apikey|"
        r"code_verifier|id_token|signing_secret|webhook_secret)['\"]?\s*[:=]\s*['\"]?)[^\s'\"&,}]+"
    ),
]
MASK = "[REDACTED]"


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + MASK, text)
    return text


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = ()
        return True
