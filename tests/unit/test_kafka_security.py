"""The Kafka security settings, their validation, the clients they build, refusals told
apart from a broker that is away, and the relays' idempotence switch (issue 18)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiokafka import errors as kafka_errors

from adapters import relay as relay_module
from adapters.kafka import (
    KafkaRefused,
    KafkaSecurity,
    broker_unavailable,
    make_producer,
    refusal,
)
from adapters.relay import OutboxRelay
from daemon.runtime.settings import Settings, SettingsError, load_settings

SCRAM: dict[str, Any] = {
    "kafka_bootstrap": "kafka-1:9093", "kafka_security_protocol": "SASL_PLAINTEXT",
    "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "syncd",
    "kafka_sasl_password": "planted-Kafka-Secret-91b"}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SYNCD_CONFIG", "SYNCD_KAFKA_BOOTSTRAP", "SYNCD_KAFKA_SECURITY_PROTOCOL",
                 "SYNCD_KAFKA_SASL_MECHANISM", "SYNCD_KAFKA_SASL_USERNAME",
                 "SYNCD_KAFKA_SASL_PASSWORD", "SYNCD_KAFKA_SSL_CAFILE",
                 "SYNCD_KAFKA_IDEMPOTENCE"):
        monkeypatch.delenv(name, raising=False)


def bad(**settings: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(**settings)
    return str(caught.value)


def test_scram_settings_build_one_security_and_never_show_the_password() -> None:
    settings = load_settings(**SCRAM)
    security = settings.kafka_security()
    assert security == KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "syncd",
                                     "planted-Kafka-Secret-91b")
    assert security.options() == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "syncd", "sasl_plain_password": "planted-Kafka-Secret-91b"}
    assert security.principal == "User:syncd"
    for text in (repr(settings), str(settings), repr(security), security.describe()):
        assert "planted-Kafka-Secret-91b" not in text


def test_plaintext_is_the_default_and_builds_clients_as_before() -> None:
    security = load_settings().kafka_security()
    assert security.protocol == "PLAINTEXT" and security.options() == {}
    assert security.principal == "User:ANONYMOUS"


@pytest.mark.parametrize(("settings", "field", "reason"), [
    ({**SCRAM, "kafka_sasl_mechanism": None}, "SYNCD_KAFKA_SASL_MECHANISM", "required"),
    ({**SCRAM, "kafka_sasl_username": None}, "SYNCD_KAFKA_SASL_USERNAME", "required"),
    ({**SCRAM, "kafka_sasl_password": None}, "SYNCD_KAFKA_SASL_PASSWORD", "required"),
    ({**SCRAM, "kafka_sasl_password": ""}, "SYNCD_KAFKA_SASL_PASSWORD", "empty"),
    ({**SCRAM, "kafka_sasl_mechanism": "GSSAPI"}, "SYNCD_KAFKA_SASL_MECHANISM", "PLAIN"),
    ({"kafka_bootstrap": "k:9092", "kafka_sasl_username": "syncd"},
     "SYNCD_KAFKA_SASL_USERNAME", "only with a SASL"),
    ({"kafka_bootstrap": "k:9092", "kafka_sasl_password": "x"},
     "SYNCD_KAFKA_SASL_PASSWORD", "only with a SASL"),
    ({"kafka_bootstrap": "k:9092", "kafka_security_protocol": "SSL",
      "kafka_sasl_mechanism": "PLAIN"}, "SYNCD_KAFKA_SASL_MECHANISM", "not SSL"),
    ({"kafka_security_protocol": "SASL_SSL"}, "SYNCD_KAFKA_SECURITY_PROTOCOL",
     "needs kafka_bootstrap"),
    ({"kafka_bootstrap": "k:9092", "kafka_security_protocol": "TLS"},
     "SYNCD_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
    ({**SCRAM, "kafka_ssl_cafile": "/etc/hostname"}, "SYNCD_KAFKA_SSL_CAFILE",
     "only with a TLS"),
    ({"kafka_bootstrap": "k:9092", "kafka_security_protocol": "SSL",
      "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "SYNCD_KAFKA_SSL_CAFILE", "no such file"),
    ({"kafka_idempotence": "yes"}, "SYNCD_KAFKA_IDEMPOTENCE", "auto"),
])
def test_wrong_combinations_name_the_field(settings: dict[str, Any], field: str,
                                           reason: str) -> None:
    message = bad(**settings)
    assert f"{field} (" in message and reason in message, message
    assert "planted-Kafka-Secret-91b" not in message


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA certificate (openssl)."""
    directory = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=syncd test CA", "-keyout", str(directory / "ca.key"),
                    "-out", str(directory / "ca.pem")],
                   check=True, capture_output=True)
    return directory / "ca.pem"


def test_tls_verifies_the_brokers_against_the_configured_ca(ca_file: Path) -> None:
    settings = load_settings(kafka_bootstrap="k:9093", kafka_security_protocol="SASL_SSL",
                             kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="u",
                             kafka_sasl_password="p", kafka_ssl_cafile=str(ca_file))
    options = settings.kafka_security().options()
    context = options.pop("ssl_context")
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
                       "sasl_plain_username": "u", "sasl_plain_password": "p"}
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName",
                                                                 "syncd test CA"),),)]


def test_refusals_are_not_waited_for_and_an_absent_broker_is() -> None:
    refused = KafkaRefused("k:9093", KafkaSecurity("SASL_SSL", "PLAIN", "syncd", "pw"),
                           "authentication failed", "SaslAuthenticationFailed")
    assert str(refused) == ("Kafka at k:9093 refused User:syncd (SASL_SSL, PLAIN):"
                            " authentication failed (SaslAuthenticationFailed)")
    for permanent in (refused, kafka_errors.SaslAuthenticationFailed(),
                      kafka_errors.TopicAuthorizationFailedError("t"),
                      kafka_errors.GroupAuthorizationFailedError("g"),
                      kafka_errors.ClusterAuthorizationFailedError()):
        assert not broker_unavailable(permanent), permanent
    assert broker_unavailable(kafka_errors.KafkaConnectionError("Unable to bootstrap"))
    assert broker_unavailable(ConnectionRefusedError())


async def test_refusal_names_what_was_refused_and_leaves_an_absent_broker_alone() -> None:
    security = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "syncd", "pw")
    found = await refusal(kafka_errors.GroupAuthorizationFailedError("g"), bootstrap="k:1",
                          security=security, doing="use consumer group 'g'")
    assert found is not None
    assert str(found).startswith("Kafka at k:1 refused User:syncd (SASL_PLAINTEXT,"
                                 " SCRAM-SHA-512): not authorized to use consumer group 'g'")
    # A failed bootstrap whose brokers are simply not there (nothing listens on port 1).
    assert await refusal(kafka_errors.KafkaConnectionError("Unable to bootstrap"),
                         bootstrap="127.0.0.1:1", security=security, doing="connect") is None
    assert await refusal(kafka_errors.RequestTimedOutError(), bootstrap="127.0.0.1:1",
                         security=security, doing="connect") is None


async def test_idempotent_producer_keeps_acks_all() -> None:
    for idempotent in (True, False):
        producer = make_producer("127.0.0.1:1", idempotent=idempotent)
        assert producer.client is not None
        assert producer._sender._acks == -1  # acks=all either way
        assert (producer._txn_manager is not None) is idempotent
        await producer.stop()


def test_idempotence_setting() -> None:
    configured = "k:9092"
    assert Settings(kafka_bootstrap=configured).kafka_idempotent(embedded=False) is None
    assert Settings().kafka_idempotent(embedded=True) is False  # auto: off when embedded
    assert Settings(kafka_bootstrap=configured,
                    kafka_idempotence="on").kafka_idempotent(embedded=False)
    assert Settings(kafka_idempotence="off").kafka_idempotent(embedded=False) is False


class FakeProducer:
    def __init__(self, idempotent: bool, fail: BaseException | None) -> None:
        self.idempotent = idempotent
        self.fail = fail
        self.stopped = False

    async def start(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def stop(self) -> None:
        self.stopped = True


def fake_producers(monkeypatch: pytest.MonkeyPatch, refuse_idempotence: BaseException | None
                   ) -> list[FakeProducer]:
    made: list[FakeProducer] = []

    def make(_bootstrap: str, *, security: KafkaSecurity, idempotent: bool) -> FakeProducer:
        made.append(FakeProducer(idempotent, refuse_idempotence if idempotent else None))
        return made[-1]

    monkeypatch.setattr(relay_module, "make_producer", make)
    return made


def relay(idempotence: bool | None) -> OutboxRelay:
    return OutboxRelay(dsn="unused", bootstrap="127.0.0.1:1", topic="t", source="desk",
                       partitions=1, idempotence=idempotence)


async def test_auto_idempotence_goes_without_on_a_broker_that_cannot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto``: the embedded broker answers InitProducerId with an unknown error; the
    relay says so once and uses a producer without idempotence."""
    made = fake_producers(monkeypatch, kafka_errors.UnknownError())
    subject = relay(None)
    with structlog.testing.capture_logs() as logs:
        producer = await subject._start_producer()
    assert [p.idempotent for p in made] == [True, False] and producer is made[1]
    assert made[0].stopped and subject.idempotence is False
    assert [e["event"] for e in logs] == ["kafka_idempotence_unsupported"]


async def test_auto_idempotence_on_a_broker_that_can(monkeypatch: pytest.MonkeyPatch) -> None:
    made = fake_producers(monkeypatch, None)
    subject = relay(None)
    assert await subject._start_producer() is made[0]
    assert made[0].idempotent and subject.idempotence is True


async def test_idempotence_on_is_not_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_producers(monkeypatch, kafka_errors.UnknownError())
    with pytest.raises(kafka_errors.UnknownError):
        await relay(True)._start_producer()


async def test_idempotence_refused_is_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A principal that may write to no topic is refused a producer id (Kafka 4:
    Write on a topic implies IdempotentWrite): said, not taken for "unsupported"."""
    fake_producers(monkeypatch, kafka_errors.ClusterAuthorizationFailedError())
    with structlog.testing.capture_logs() as logs, pytest.raises(KafkaRefused) as caught:
        await relay(None)._start_producer()
    assert "not authorized to produce idempotently" in str(caught.value)
    assert [e["event"] for e in logs] == ["kafka_refused"]
