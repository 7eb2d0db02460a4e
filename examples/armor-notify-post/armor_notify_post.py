"""The smallest armor-notify destination: POST each alert as JSON to a URL."""

import json
from collections.abc import Callable

import armor_notify
from armor_notify.http import HttpClient, NetworkError


class PostConfig(armor_notify.DestinationConfig):
    url: armor_notify.SecretHttpsUrl  # masked everywhere: a webhook's URL is often its password

    def describe(self) -> str:
        return f"POST to {self.url}"  # str() of a secret URL is masked: https://host/…


class PostSender:
    def __init__(self, config: PostConfig) -> None:
        self.url, self.where = config.url.get_secret_value(), str(config.url)
        self.http = HttpClient(self.url, {"Content-Type": "application/json"})

    def send(self, notification: armor_notify.Notification) -> armor_notify.Outcome:
        body = json.dumps(notification.alert.model_dump(mode="json")).encode()
        try:
            answer = self.http.post(self.url, body, timeout=notification.timeout)
        except NetworkError as exc:  # no answer in time, refused, TLS trouble...
            return exc.outcome(self.where, notification.timeout)
        said = f"HTTP {answer.status} {answer.reason}"
        if answer.status < 300:
            return armor_notify.Outcome.delivered()
        if answer.status == 429 or answer.status >= 500:
            wait = armor_notify.parse_retry_after(answer.headers.get("Retry-After"))
            return armor_notify.Outcome.retry(said, retry_after=wait)
        return armor_notify.Outcome.failed(said)


@armor_notify.hookimpl
def register_destination_types(register: Callable[[armor_notify.DestinationType], None]) -> None:
    register(armor_notify.DestinationType("post", PostConfig, PostSender))
