"""TLS and basic auth on ``/metrics``, from the exporter-toolkit web configuration file.

The same YAML file Prometheus, Pushgateway and the Go exporters read (``--web.config.file``)::

    tls_server_config:
      cert_file: server.crt          # relative paths are relative to this file
      key_file: server.key
      client_ca_file: clients.crt    # optional: with client_auth_type, mutual TLS
      client_auth_type: RequireAndVerifyClientCert
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2b$12$...         # a bcrypt hash, never the password

The path (``web_config=`` or ``BOTO_PROM_WEB_CONFIG``) is settled by :mod:`boto_prom.settings`;
the file is read once, when the server starts; a file that ``promtool check web-config`` rejects
is rejected here too, with one sentence. A few settings that Python's ``ssl`` module cannot
honour (``RequestClientCert``, ``RequireAnyClientCert``, ``curve_preferences``) are rejected
rather than ignored. Needs PyYAML and bcrypt: ``pip install 'boto-prom[production]'``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import ssl
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .settings import ConfigurationError

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

_TOP = ("tls_server_config", "http_server_config", "basic_auth_users")
_TLS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "cipher_suites",
        "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites")
_HTTP = ("http2", "headers")

# Headers the exporter-toolkit lets a web config set, with the values it allows (None: any).
_HEADERS: Dict[str, Optional[Tuple[str, ...]]] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's cipher suite names -> OpenSSL's. Go does not let TLS 1.3 suites be configured and ignores
# them here; so do we (None).
_CIPHERS: Dict[str, Optional[str]] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}
_CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519")

_CLIENT_AUTH = {
    "": ssl.CERT_NONE, "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go asks for (or requires) a certificate without verifying it; Python's ssl verifies every
# certificate it asks for, so these cannot be served as written.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")

# What Go's bcrypt.Cost accepts, narrowed to the hashes Python's bcrypt can check.
_BCRYPT_RE = re.compile(rb"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")

_CACHE_SIZE = 16
"""Verified (user, password) pairs remembered, so that a scrape does not pay bcrypt's cost."""

UNAUTHORIZED: Tuple[str, List[Tuple[str, str]], bytes] = (
    "401 Unauthorized",
    [("Content-Type", "text/plain; charset=utf-8"),
     ("WWW-Authenticate", 'Basic realm="boto-prom", charset="UTF-8"')],
    b"Unauthorized\n")
"""The answer to a request without a configured user's password: status, headers, body."""

_HASH_HELP = ("make one with: python -c \"import bcrypt, getpass; "
              "print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt()).decode())\"")


class WebConfig:
    """A checked web configuration: the TLS context, the extra headers and the users.

    Build it with :func:`load_web_config`.

    Attributes:
        path: the file it was read from.
        ssl_context: the server-side TLS context, or None when the file configures no TLS.
        headers: response headers added to every answer.
        users: user name -> bcrypt hash; empty when basic auth is off.
    """

    def __init__(self, path: str, ssl_context: Optional[ssl.SSLContext],
                 headers: List[Tuple[str, str]], users: Dict[bytes, bytes]) -> None:
        import bcrypt

        self.path = path
        self.ssl_context = ssl_context
        self.headers = headers
        self.users = users
        self._checkpw = bcrypt.checkpw
        # An unknown user is checked against a hash of the same cost, so that a wrong user
        # name takes as long as a wrong password (no user enumeration by timing).
        cost = max((int(_BCRYPT_RE.match(h).group(1)) for h in users.values()),  # type: ignore
                   default=4)
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        # Cache keys are HMACs under a key that never leaves this process: a stolen memory
        # dump or a timing probe of the dict lookup gives nothing to replay.
        self._key = os.urandom(32)
        self._verified: "OrderedDict[bytes, None]" = OrderedDict()
        self._cache_lock = threading.Lock()
        # bcrypt is CPU-heavy by design: one check at a time, like the exporter-toolkit.
        self._bcrypt_lock = threading.Lock()

    def _cache_key(self, authorization: Optional[str]) -> Optional[Tuple[bytes, bytes, bytes]]:
        """(cache key, user, password) of a Basic ``Authorization`` header, else None."""
        if not authorization or authorization[:6].lower() != "basic ":
            return None
        try:
            raw = base64.b64decode(authorization[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = raw.partition(b":")
        if not sep:
            return None
        key = hmac.new(self._key, len(user).to_bytes(4, "big") + user + password,
                       hashlib.sha256).digest()
        return key, user, password

    def cached(self, authorization: Optional[str]) -> Optional[bool]:
        """What can be said without bcrypt: True for remembered credentials, False for a
        header that can never pass, None when only :meth:`check` can tell (a server runs
        that in a pool of its own, off the thread that answers everyone else)."""
        parsed = self._cache_key(authorization)
        if parsed is None:
            return False
        with self._cache_lock:
            if parsed[0] in self._verified:
                self._verified.move_to_end(parsed[0])
                return True
        return None

    def check(self, authorization: Optional[str]) -> bool:
        """True when an ``Authorization`` header carries a configured user's password."""
        verdict = self.cached(authorization)
        if verdict is not None:
            return verdict
        key, user, password = self._cache_key(authorization)  # type: ignore[misc]
        hashed = self.users.get(user)
        with self._bcrypt_lock:
            try:
                ok = self._checkpw(password, hashed if hashed is not None else self._dummy)
            except ValueError:  # a password bcrypt refuses (longer than 72 bytes)
                ok = False
        if not ok or hashed is None:
            return False  # failures are never cached: each costs a full bcrypt check
        with self._cache_lock:
            self._verified[key] = None
            while len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return True

    def wrap(self, app: WSGIApp) -> WSGIApp:
        """app behind this file's basic auth, answering with its headers.

        Args:
            app: the WSGI app to protect (``boto_prom.make_app(registry)``...).
        """
        extra = list(self.headers)
        users = self.users

        def secured(environ: dict, start_response: Callable) -> Iterable[bytes]:
            if users and not self.check(environ.get("HTTP_AUTHORIZATION")):
                status, headers, body = UNAUTHORIZED
                start_response(status, headers + extra)
                return [body]
            if not extra:
                return app(environ, start_response)

            def start(status: str, headers: List[Tuple[str, str]],
                      exc_info: Any = None) -> Callable:
                return start_response(status, list(headers) + extra, exc_info)

            return app(environ, start)

        return secured


def load_web_config(path: str) -> WebConfig:
    """Read and check a web configuration file.

    Args:
        path: the YAML file (``tls_server_config``, ``http_server_config``,
            ``basic_auth_users``).

    Raises:
        ConfigurationError: one sentence on what is wrong (a file ``promtool check
            web-config`` rejects is always rejected), or PyYAML/bcrypt are not installed.
    """
    try:
        import bcrypt  # noqa: F401
        import yaml
    except ImportError:
        raise ConfigurationError(
            "web_config needs PyYAML and bcrypt, which did not import; install them with "
            "pip install 'boto-prom[production]'."
        ) from None
    path = os.fspath(path)

    def bad(problem: str) -> ConfigurationError:
        return ConfigurationError(f"web config {path}: {problem}.")

    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror or exc})") from None
    try:
        doc = yaml.load(text, Loader=_strict_loader(yaml))
    except RecursionError:
        raise bad("is nested too deeply to be a web configuration file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise bad(f"is not valid YAML{where} ({problem})") from None
    doc = _mapping(doc, "the file", _TOP, bad)
    base = os.path.dirname(os.path.abspath(path))
    users = _users(doc.get("basic_auth_users"), bad)
    headers, _ = _http(doc.get("http_server_config"), bad)
    context = _tls(doc.get("tls_server_config"), base, bad)
    return WebConfig(path, context, headers, users)


# --- parsing ---------------------------------------------------------------------------------

def _strict_loader(yaml: Any) -> type:
    """A safe loader that rejects duplicate keys, as Go's strict YAML decoding does."""

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        loader.flatten_mapping(node)
        result: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in result
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key is not a plain value", key_node.start_mark) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is set twice", key_node.start_mark)
            result[key] = loader.construct_object(value_node, deep=deep)
        return result

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def _mapping(value: Any, what: str, allowed: Tuple[str, ...], bad: Callable) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"{what} must be a mapping of {', '.join(allowed)}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise bad(f"{what} has unknown field {unknown[0]!r} (known: {', '.join(allowed)})")
    return value


def _text(value: Any, what: str, bad: Callable) -> str:
    # Go's YAML decoder turns any scalar into a string field; lists and maps are errors.
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise bad(f"{what} must be a string, not {value!r}")
    return str(value)


def _names(value: Any, what: str, bad: Callable) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(f"{what} must be a list")
    return [_text(v, what, bad) for v in value]


def _users(value: Any, bad: Callable) -> Dict[bytes, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad("basic_auth_users must map user names to bcrypt hashes")
    users: Dict[bytes, bytes] = {}
    for name, hashed in value.items():
        name_text = _text(name, "a basic_auth_users name", bad)
        hashed_text = _text(hashed, f"basic_auth_users[{name_text!r}]", bad).encode()
        match = _BCRYPT_RE.match(hashed_text)
        if match is None or not 4 <= int(match.group(1)) <= 31:
            raise bad(f"basic_auth_users[{name_text!r}] is not a bcrypt hash ($2b$ and a "
                      f"cost from 04 to 31); {_HASH_HELP}")
        users[name_text.encode()] = hashed_text
    return users


def _http(value: Any, bad: Callable) -> Tuple[List[Tuple[str, str]], bool]:
    conf = _mapping(value, "http_server_config", _HTTP, bad)
    http2 = conf.get("http2", True)
    if http2 is None:
        http2 = False
    if not isinstance(http2, bool):
        raise bad(f"http_server_config.http2 must be true or false, not {http2!r}")
    raw = conf.get("headers")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad("http_server_config.headers must map header names to values")
    headers = []
    for name, header_value in raw.items():
        name = _text(name, "a header name", bad)
        header_value = _text(header_value, f"header {name}", bad)
        if name not in _HEADERS:
            raise bad(f"header {name!r} cannot be configured (allowed: {', '.join(_HEADERS)})")
        allowed = _HEADERS[name]
        if allowed is not None and header_value not in allowed:
            raise bad(f"header {name} must be one of {', '.join(allowed)}, "
                      f"not {header_value!r}")
        if "\r" in header_value or "\n" in header_value:
            raise bad(f"header {name} must be on one line")
        if not header_value.isascii():  # HTTP/1.1 sends header values as ASCII
            raise bad(f"header {name} must be ASCII, not {header_value!r}")
        headers.append((name, header_value))
    # HTTP/2 is allowed, not required: this server speaks HTTP/1.1 either way.
    return headers, http2


def _tls(value: Any, base: str, bad: Callable) -> Optional[ssl.SSLContext]:
    conf = _mapping(value, "tls_server_config", _TLS, bad)
    cert = _text(conf.get("cert_file"), "cert_file", bad)
    key = _text(conf.get("key_file"), "key_file", bad)
    ca = _text(conf.get("client_ca_file"), "client_ca_file", bad)
    auth = _text(conf.get("client_auth_type"), "client_auth_type", bad)
    ciphers = _names(conf.get("cipher_suites"), "cipher_suites", bad)
    curves = _names(conf.get("curve_preferences"), "curve_preferences", bad)
    versions = []
    for field, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = _text(conf.get(field), field, bad) or default
        if name not in _VERSIONS:
            raise bad(f"{field} must be one of {', '.join(_VERSIONS)}, not {name!r}")
        versions.append(_VERSIONS[name])
    prefer = conf.get("prefer_server_cipher_suites", True)
    if prefer is None:
        prefer = False
    if not isinstance(prefer, bool):
        raise bad(f"prefer_server_cipher_suites must be true or false, not {prefer!r}")
    for name in ciphers:
        if name not in _CIPHERS:
            raise bad(f"cipher_suites has an unknown cipher {name!r}")
    for name in curves:
        if name not in _CURVES:
            raise bad(f"curve_preferences has an unknown curve {name!r}")

    if not (cert or key or ca or auth):
        return None  # no TLS: the other TLS fields are checked, then unused, as in Go
    if not cert:
        raise bad("tls_server_config needs cert_file")
    if not key:
        raise bad("tls_server_config needs key_file")
    if auth in _UNVERIFIED_CLIENT_AUTH:
        raise bad(f"client_auth_type {auth} asks for client certificates without verifying "
                  "them, which Python's ssl cannot do; use VerifyClientCertIfGiven or "
                  "RequireAndVerifyClientCert with client_ca_file")
    if auth not in _CLIENT_AUTH:
        raise bad(f"client_auth_type {auth!r} is not one of NoClientCert, "
                  "VerifyClientCertIfGiven, RequireAndVerifyClientCert")
    verify = _CLIENT_AUTH[auth]
    if ca and verify == ssl.CERT_NONE:
        raise bad("client_ca_file is set without a client_auth_type that uses it")
    if verify != ssl.CERT_NONE and not ca:
        raise bad(f"client_auth_type {auth} needs client_ca_file, the CA that signs the "
                  "client certificates")
    if curves:
        raise bad("curve_preferences cannot be applied by Python's ssl module; remove it "
                  "to use OpenSSL's defaults")
    if versions[0] > versions[1]:
        raise bad("min_version is newer than max_version")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # A client asking to renegotiate (TLS 1.2) is refused, as OpenSSL 3 does by default and
    # 1.1.1 does not: the server answers on the connection as it was set up.
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.minimum_version, context.maximum_version = versions
    except (ValueError, ssl.SSLError) as exc:
        raise bad(f"this Python's OpenSSL cannot use those TLS versions ({exc})") from None
    cert_path, key_path = os.path.join(base, cert), os.path.join(base, key)
    for field, file in (("cert_file", cert_path), ("key_file", key_path)):
        if not os.path.isfile(file):
            raise bad(f"{field} {file} does not exist")

    def no_password() -> bytes:
        raise ValueError("encrypted")

    try:
        context.load_cert_chain(cert_path, key_path, password=no_password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise bad(f"cert_file and key_file are not a matching PEM certificate and unencrypted "
                  f"key ({_reason(exc)})") from None
    if ca:
        ca_path = os.path.join(base, ca)
        try:
            context.load_verify_locations(cafile=ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise bad(f"client_ca_file {ca_path} holds no usable PEM certificate "
                      f"({_reason(exc)})") from None
    context.verify_mode = verify
    openssl = [_CIPHERS[name] for name in ciphers if _CIPHERS[name]]
    if openssl:
        try:
            context.set_ciphers(":".join(openssl))  # type: ignore[arg-type]
        except ssl.SSLError as exc:
            raise bad(f"cipher_suites leave no cipher this OpenSSL offers ({exc})") from None
    if prefer:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


__all__ = ["WebConfig", "load_web_config"]
