"""armor-notify: route data-observability alerts to PagerDuty, Slack, email and plugins.

The names below are imported on first use (PEP 562), so ``import armor_notify`` and
``armor-notify --version`` cost next to nothing; ``from armor_notify import Alert`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Alert", "Asset", "Change", "Check", "Freshness", "Severity"), "alert"),
    **dict.fromkeys(("DestinationConfig", "DestinationType", "HttpsUrl", "Notification",
                     "RateLimit", "SecretHttpsUrl", "Sender", "is_loopback_host"), "destinations"),
    **dict.fromkeys(("AlertError", "ArmorNotifyError", "ConfigError", "PluginError"), "errors"),
    **dict.fromkeys(("Outcome", "parse_retry_after"), "outcome"),
    "hookimpl": "plugins",
    **dict.fromkeys(("Secret", "SecretUrl", "mask_secret", "mask_url"), "secrets"),
    **dict.fromkeys(("Source", "SourceAlert", "SourceError", "SourceInput"), "sources"),
    "StrictModel": "validation",
}

__all__ = [
    "Alert",
    "AlertError",
    "ArmorNotifyError",
    "Asset",
    "Change",
    "Check",
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
    "Source",
    "SourceAlert",
    "SourceError",
    "SourceInput",
    "StrictModel",
    "__version__",
    "hookimpl",
    "is_loopback_host",
    "mask_secret",
    "mask_url",
    "parse_retry_after",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'armor_notify' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and editors see: the same names, imported
    from .alert import Alert as Alert
    from .alert import Asset as Asset
    from .alert import Change as Change
    from .alert import Freshness as Freshness
    from .alert import Severity as Severity
    from .destinations import DestinationConfig as DestinationConfig
    from .destinations import DestinationType as DestinationType
    from .destinations import HttpsUrl as HttpsUrl
    from .destinations import Notification as Notification
    from .destinations import RateLimit as RateLimit
    from .destinations import SecretHttpsUrl as SecretHttpsUrl
    from .destinations import Sender as Sender
    from .destinations import is_loopback_host as is_loopback_host
    from .errors import AlertError as AlertError
    from .errors import ArmorNotifyError as ArmorNotifyError
    from .errors import ConfigError as ConfigError
    from .errors import PluginError as PluginError
    from .outcome import Outcome as Outcome
    from .outcome import parse_retry_after as parse_retry_after
    from .plugins import hookimpl as hookimpl
    from .secrets import Secret as Secret
    from .secrets import SecretUrl as SecretUrl
    from .secrets import mask_secret as mask_secret
    from .secrets import mask_url as mask_url
    from .sources import Source as Source
    from .sources import SourceAlert as SourceAlert
    from .sources import SourceError as SourceError
    from .sources import SourceInput as SourceInput
    from .validation import StrictModel as StrictModel
