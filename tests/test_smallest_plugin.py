"""The smallest plugin, the one docs/plugins.md starts from (examples/armor-notify-post), passes
the destination conformance suite: its own tests, collected here from the example."""

import sys

from conftest import EXAMPLES

for path in (EXAMPLES / "armor-notify-post", EXAMPLES / "armor-notify-post" / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from test_armor_notify_post import (  # noqa: E402  (the example is not installed: on the path above)
    TestPostConformance,
    test_the_hook_registers_the_post_type,
)

__all__ = ["TestPostConformance", "test_the_hook_registers_the_post_type"]
