"""solar_agents: hourly solar production and weather from Kafka into training features in RisingWave.

``faust -A solar_agents worker`` loads ``solar_agents.runtime.app``; importing the pure modules (``hours``,
``features``, ``records``) does not build the app.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from solar_agents.runtime.app import app

        return app
    raise AttributeError(name)
