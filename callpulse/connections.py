"""Client options for Kafka and Redis built from the settings: bootstrap servers, SASL, TLS and CA files.

Every process that talks to Kafka (worker, replay, simulator, topic creation) or Redis (worker, monitor, replay)
builds its clients from these, so the security settings mean the same everywhere. Passwords go into the
clients only: these functions never log them, and `Settings` keeps the Kafka password out of its repr.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any
from urllib.parse import urlparse

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from faust.auth import Credentials, SASLCredentials, SSLCredentials

from callpulse.exceptions import CallpulseError
from callpulse.settings import Settings

__all__ = [
    "KafkaAuthError",
    "auth_error",
    "check_kafka",
    "faust_credentials",
    "kafka_options",
    "kafka_security_options",
    "kafka_ssl_context",
    "redis_options",
]


class KafkaAuthError(CallpulseError):
    """Kafka refused the credentials or its TLS certificate is not trusted: a setting to fix, not worth retrying."""


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context trusting CALLPULSE_KAFKA_CA (else the system's store), or None when Kafka is not over TLS."""
    if settings.kafka_security not in ("SSL", "SASL_SSL"):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ca)


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin): bootstrap servers and security."""
    return {"bootstrap_servers": settings.kafka.split(","), **kafka_security_options(settings)}


def kafka_security_options(settings: Settings) -> dict[str, Any]:
    """The security part of `kafka_options`: protocol, TLS context, SASL mechanism and credentials."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_username,
            sasl_plain_password=settings.kafka_password,
        )
    return options


def faust_credentials(settings: Settings) -> Credentials | None:
    """The Faust worker's `broker_credentials`, or None for PLAINTEXT."""
    if settings.kafka_security == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if settings.kafka_security == "SSL":
        assert context is not None
        return SSLCredentials(context)
    credentials = SASLCredentials(
        username=settings.kafka_username,
        password=settings.kafka_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )
    return credentials


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for redis-py's from_url next to CALLPULSE_REDIS: the CA file for rediss:// URLs."""
    if urlparse(settings.redis_url).scheme != "rediss":
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if settings.redis_ca is not None:
        options["ssl_ca_certs"] = settings.redis_ca
    return options


async def check_kafka(settings: Settings, *, timeout_s: float = 10.0) -> None:
    """Log in to the first bootstrap server once; KafkaAuthError naming the setting when the login is refused.

    A broker that does not answer is no error here: the callers retry until it does. aiokafka's own clients
    only report "Unable to bootstrap" for any of these, so this probe is what turns a wrong password into a
    message that names CALLPULSE_KAFKA_PASSWORD.
    """
    host, _, port = settings.kafka.split(",")[0].strip().rpartition(":")
    options = kafka_security_options(settings)
    try:
        conn = await asyncio.wait_for(
            create_conn(host.strip("[]"), int(port), request_timeout_ms=int(timeout_s * 1000), **options), timeout_s
        )
    except (KafkaError, OSError, TimeoutError) as exc:
        error = auth_error(settings, exc)
        if error is not None:
            raise error from None  # the chained exception would only repeat it
        return
    conn.close()


def auth_error(settings: Settings, exc: BaseException) -> KafkaAuthError | None:
    """A one-line error naming the setting to fix when `exc` is Kafka refusing the credentials or the TLS peer.

    None when `exc` is something else (a broker that is merely down is retried, not reported as a setting).
    """
    text = f"{type(exc).__name__}: {exc}"
    where = f"Kafka at {settings.kafka}"
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return KafkaAuthError(
            f"{where}: its TLS certificate is not trusted ({_reason(exc)}); set CALLPULSE_KAFKA_CA to the CA file"
        )
    if isinstance(exc, KafkaError) and "authentication" in text.lower():
        user = settings.kafka_username or ""
        return KafkaAuthError(
            f"{where} refused SASL {settings.kafka_sasl_mechanism} login of user {user!r}: check "
            "CALLPULSE_KAFKA_PASSWORD (and CALLPULSE_KAFKA_USERNAME, CALLPULSE_KAFKA_SASL_MECHANISM)"
        )
    return None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
    return str(reason).splitlines()[0][:120]
