"""SIP status codes with their reason phrases (RFC 3261 §21, RFC 3581, RFC 6665)."""

from __future__ import annotations

from enum import IntEnum


class StatusCode(IntEnum):
    """A SIP status code; ``phrase`` is the RFC reason phrase."""

    phrase: str

    def __new__(cls, value: int, phrase: str = "") -> StatusCode:
        obj = int.__new__(cls, value)
        obj._value_ = value
        obj.phrase = phrase
        return obj

    TRYING = 100, "Trying"
    RINGING = 180, "Ringing"
    SESSION_PROGRESS = 183, "Session Progress"
    OK = 200, "OK"
    ACCEPTED = 202, "Accepted"
    MOVED_TEMPORARILY = 302, "Moved Temporarily"
    BAD_REQUEST = 400, "Bad Request"
    UNAUTHORIZED = 401, "Unauthorized"
    FORBIDDEN = 403, "Forbidden"
    NOT_FOUND = 404, "Not Found"
    METHOD_NOT_ALLOWED = 405, "Method Not Allowed"
    PROXY_AUTHENTICATION_REQUIRED = 407, "Proxy Authentication Required"
    REQUEST_TIMEOUT = 408, "Request Timeout"
    REQUEST_ENTITY_TOO_LARGE = 413, "Request Entity Too Large"
    REQUEST_URI_TOO_LONG = 414, "Request-URI Too Long"
    UNSUPPORTED_MEDIA_TYPE = 415, "Unsupported Media Type"
    UNSUPPORTED_URI_SCHEME = 416, "Unsupported URI Scheme"
    BAD_EXTENSION = 420, "Bad Extension"
    INTERVAL_TOO_BRIEF = 423, "Interval Too Brief"
    TEMPORARILY_UNAVAILABLE = 480, "Temporarily Unavailable"
    CALL_DOES_NOT_EXIST = 481, "Call/Transaction Does Not Exist"
    LOOP_DETECTED = 482, "Loop Detected"
    TOO_MANY_HOPS = 483, "Too Many Hops"
    BUSY_HERE = 486, "Busy Here"
    REQUEST_TERMINATED = 487, "Request Terminated"
    NOT_ACCEPTABLE_HERE = 488, "Not Acceptable Here"
    BAD_EVENT = 489, "Bad Event"
    SERVER_INTERNAL_ERROR = 500, "Server Internal Error"
    NOT_IMPLEMENTED = 501, "Not Implemented"
    SERVICE_UNAVAILABLE = 503, "Service Unavailable"
    SERVER_TIMEOUT = 504, "Server Time-out"
    VERSION_NOT_SUPPORTED = 505, "Version Not Supported"
    MESSAGE_TOO_LARGE = 513, "Message Too Large"
    BUSY_EVERYWHERE = 600, "Busy Everywhere"
    DECLINE = 603, "Decline"


_PHRASES = {int(code): code.phrase for code in StatusCode}


def reason_phrase(status: int) -> str:
    """The RFC reason phrase for ``status``, or a generic one for its class."""
    phrase = _PHRASES.get(status)
    if phrase is not None:
        return phrase
    return {1: "Provisional", 2: "OK", 3: "Redirection", 4: "Client Error", 5: "Server Error"}.get(
        status // 100, "Global Failure"
    )


def is_provisional(status: int) -> bool:
    """1xx responses (RFC 3261 §7.2)."""
    return 100 <= status < 200


def is_final(status: int) -> bool:
    """2xx-6xx responses end a transaction (RFC 3261 §17)."""
    return 200 <= status < 700
