"""Tiny stand-ins: what boto 2 hands a request hook (for malformed-input tests), and a sink
that keeps records."""


class FakeResponse:
    """A response with a status and headers, read the way boto's HTTPResponse is."""

    def __init__(self, status, headers=None):
        self.status = status
        self._headers = {"Content-Length": "42"} if headers is None else headers

    def getheader(self, name, default=None):
        return self._headers.get(name, default)


class Bare:
    """An object with nothing boto would put on a request or a response."""


class KeptRecords:
    """A sink that keeps the records it is handed, as the CSV sink would queue them."""

    wants_request_id = True

    def __init__(self):
        self.records = []

    def record(self, rec):
        self.records.append(rec)
