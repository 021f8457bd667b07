"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .http_server import ArchiveServer


@pytest.fixture()
def server() -> Iterator[ArchiveServer]:
    srv = ArchiveServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
