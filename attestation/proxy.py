"""The nginx configuration in front of each role's gunicorn: deadlines, body limits, request buffering,
per-client limits and JSON error pages (issue 12: a slow client must never hold a gunicorn thread).

It lives in attestation/ because this folder is in every role's measurement (node1, node2 and the broker
alike): a changed proxy configuration changes the measurement of the role it fronts, as a changed route
would. The launcher renders it; nothing here runs nginx.
"""
from dataclasses import dataclass
from string import Template


@dataclass(frozen=True)
class ProxyRole:
    """What differs between the roles' proxies."""

    streams: tuple[str, ...] = ()  # paths whose responses are text/event-stream: never buffered
    read_timeout_s: int = 60       # longest silence from gunicorn while it answers one request
    rate: int = 100                # requests per second per client address, after the burst
    burst: int = 400


ROLES = {
    # A non-streaming /generate answers only at its last token: up to 1024 tokens on a loaded machine.
    "node1": ProxyRole(streams=("/generate", "/v1/sealed/generate", "/v1/chat/completions", "/v1/completions",
                                "/v1/sealed/openai"), read_timeout_s=600, rate=100, burst=400),
    # node1 is node2's one legitimate client: a step per token per pipeline slot, each answered within
    # gunicorn's 120 s worker timeout.
    "node2": ProxyRole(read_timeout_s=130, rate=1000, burst=2000),
    "broker": ProxyRole(read_timeout_s=60, rate=50, burst=200),
}
# Connections at once per client address. The suite's load test runs 32 clients from 127.0.0.1 and the
# slow-body test holds 64 more beside a victim; node1's link to node2 keeps a few.
CONNS_PER_CLIENT = 128
# Statuses nginx itself can answer (a gunicorn answer passes through as the app wrote it).
ERRORS = {
    400: "bad request", 408: "request timed out", 413: "request body is over the limit of {max_body} bytes",
    414: "request URI too long",
    429: "too many requests from this address: retry shortly", 431: "request headers too large",
    500: "internal error in the proxy", 502: "the service behind the proxy is not answering",
    503: "service unavailable", 504: "the service behind the proxy timed out",
}


class NginxTemplate(Template):
    delimiter = "%"  # nginx's own variables start with $


TEMPLATE = NginxTemplate("""\
# Rendered by the launcher from attestation/proxy.py for %{role}; edit the template, not this file.
%{user}
worker_processes 1;
daemon off;
pid %{prefix}/nginx.pid;
# Only alert and worse: nginx quotes the request line, query string included, in its lower levels.
error_log stderr alert;
# SIGQUIT stops accepting at once; requests in flight then have this long before their connections close.
worker_shutdown_timeout %{shutdown_s}s;

events { worker_connections 1024; }

http {
    # No access log: a request line can carry a query string. Errors go to stderr, without bodies.
    access_log off;
    server_tokens off;
    client_body_temp_path %{prefix}/body;
    proxy_temp_path %{prefix}/proxy;
    fastcgi_temp_path %{prefix}/fastcgi;
    uwsgi_temp_path %{prefix}/uwsgi;
    scgi_temp_path %{prefix}/scgi;

    # Deadlines between two reads (headers, body) and two writes: a silent client is dropped.
    client_header_timeout 10s;
    client_body_timeout 10s;
    send_timeout 30s;
    keepalive_timeout 75s;
    keepalive_requests 10000;
    client_header_buffer_size 1k;
    large_client_header_buffers 4 8k;
    # The role's own limit: a bigger body, chunked or not, is refused while it arrives. The whole body
    # is read here (memory, then the temp path) before gunicorn sees the request, so a slow sender
    # holds an nginx connection, never a gunicorn thread.
    client_max_body_size %{max_body};
    client_body_buffer_size 64k;
    proxy_request_buffering on;

    limit_conn_zone $binary_remote_addr zone=conns:1m;
    limit_req_zone $binary_remote_addr zone=reqs:1m rate=%{rate}r/s;
    limit_conn conns %{conns};
    limit_req zone=reqs burst=%{burst} nodelay;
    limit_conn_status 429;
    limit_req_status 429;

    upstream app {
        server unix:%{socket};
        # Kept-alive connections to gunicorn, closed here before gunicorn's own keep-alive ends them.
        keepalive 32;
        keepalive_timeout 60s;
    }

    server {
        listen %{host}:%{port};
        default_type application/json;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        # Overwritten, not appended: the one address gunicorn's app may trust is the one nginx saw.
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_connect_timeout 5s;
        proxy_send_timeout 30s;
        proxy_read_timeout %{read_timeout_s}s;
        proxy_buffers 16 16k;

        location / { proxy_pass http://app; }
%{streams}
%{error_pages}
    }
}
""")

STREAM = """\
        location = %{path} {
            proxy_pass http://app;
            proxy_buffering off;  # text/event-stream: each token leaves as soon as gunicorn writes it
        }
"""


def _error_pages(max_body: int) -> str:
    # URIs, not named locations: a request line too long to parse (414) has no URI to redirect from.
    lines = [f"        error_page {status} /.errors/{status};" for status in ERRORS if status != 431]
    lines.append("        error_page 494 =431 /.errors/431;  # nginx's own code for headers too large")
    for status, message in ERRORS.items():
        message = message.format(max_body=max_body)  # the app's own words for its limit
        extra = " add_header Retry-After 1 always;" if status == 429 else ""
        lines.append(f"        location = /.errors/{status} {{ internal; default_type application/json;{extra} "
                     f"return {status} '{{\"error\": \"{message}\"}}\\n'; }}")
    return "\n".join(lines)


def render(role: str, *, host: str, port: int, socket: str, prefix: str, max_body: int, shutdown_s: float,
           user: str | None = None) -> str:
    """nginx.conf for one role: listen on host:port, pass to gunicorn's unix socket, keep state in prefix."""
    spec = ROLES[role]
    streams = "".join(NginxTemplate(STREAM).substitute(path=p) for p in spec.streams)
    return TEMPLATE.substitute(
        role=role, user=f"user {user};" if user else "# runs as the user that starts it", prefix=prefix,
        shutdown_s=max(1, round(shutdown_s)), max_body=max_body, rate=spec.rate, burst=spec.burst,
        conns=CONNS_PER_CLIENT, socket=socket, host=host, port=port, read_timeout_s=spec.read_timeout_s,
        streams=streams, error_pages=_error_pages(max_body))
