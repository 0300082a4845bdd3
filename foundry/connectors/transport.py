"""One HTTP exchange, with transport failures turned into typed errors."""

from __future__ import annotations

from typing import Any

import httpx

from foundry.connectors.breaker import CircuitOpen
from foundry.connectors.errors import ConnectFailed, NetworkError, Paused, Timeout


def send(client: httpx.Client, operation: str, target: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, url, **kwargs)
    except CircuitOpen as err:
        raise Paused(operation, target, str(err)) from err
    except httpx.ConnectTimeout as err:
        raise ConnectFailed(operation, target, f"cannot connect: {err}") from err
    except httpx.TimeoutException as err:
        raise Timeout(operation, target, f"no answer within the timeout ({type(err).__name__})") from err
    except httpx.ConnectError as err:
        raise ConnectFailed(operation, target, f"cannot connect: {err}") from err
    except httpx.TransportError as err:
        raise NetworkError(operation, target, f"{type(err).__name__}: {err}") from err
