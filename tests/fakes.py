"""Tiny stand-ins for what boto 2 hands a request hook, for malformed-input tests."""


class FakeResponse:
    """A response with a status and headers, read the way boto's HTTPResponse is."""

    def __init__(self, status, headers=None):
        self.status = status
        self._headers = {"Content-Length": "42"} if headers is None else headers

    def getheader(self, name, default=None):
        return self._headers.get(name, default)


class Bare:
    """An object with nothing boto would put on a request or a response."""
