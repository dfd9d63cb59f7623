"""Whether a service the sandbox uses (RabbitMQ on loopback) is there to be used."""

from __future__ import annotations

import socket

RABBITMQ_ADDRESS = ("127.0.0.1", 5672)


def rabbitmq_reachable(address: tuple[str, int] = RABBITMQ_ADDRESS,
                       timeout: float = 2.0) -> bool:
    """True if a TCP connection to the broker's AMQP port opens within ``timeout``."""
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False
