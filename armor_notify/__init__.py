"""armor-notify: route data-observability alerts to PagerDuty, Slack, email and plugins."""

from __future__ import annotations

from .alert import Alert, Asset, Change, Freshness, Severity
from .destinations import (
    DestinationConfig,
    DestinationType,
    HttpsUrl,
    Notification,
    RateLimit,
    SecretHttpsUrl,
    Sender,
    is_loopback_host,
)
from .errors import AlertError, ArmorNotifyError, ConfigError, PluginError
from .outcome import Outcome, parse_retry_after
from .plugins import hookimpl
from .secrets import Secret, SecretUrl, mask_secret, mask_url

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlertError",
    "ArmorNotifyError",
    "Asset",
    "Change",
    "ConfigError",
    "DestinationConfig",
    "DestinationType",
    "Freshness",
    "HttpsUrl",
    "Notification",
    "Outcome",
    "PluginError",
    "RateLimit",
    "Secret",
    "SecretHttpsUrl",
    "SecretUrl",
    "Sender",
    "Severity",
    "__version__",
    "hookimpl",
    "is_loopback_host",
    "mask_secret",
    "mask_url",
    "parse_retry_after",
]
