"""``ddpctl serve``."""
from __future__ import annotations

import json
import logging
import os
import shlex
import ssl
import sys
from typing import Any

import click

from .. import __version__
from ..config import DEFAULT_DB_CONNECTIONS, SYSTEM_CONNECTIONS, ServeConfig, parse_listen
from ..log import FORMATS, LEVELS, configure_logging, log_format_in_use
from .byte_size import ByteSize
from .django_setup import django_options, setup_django
from .observability import (
    OBSERVABILITY_OPTIONS,
    apply_observability,
    metrics_listener,
    multiprocess_metrics,
    observability_options,
    observability_rows,
)
from .option_settings import apply_settings, setting_problems
from .seconds import Seconds

logger = logging.getLogger(__name__)


METEOR_OPTIONS = ("meteor_bundle", "meteor_settings", "root_url", "ddp_url", "meteor_sri",
                  "meteor_source_maps", "meteor_watch")
# Environment variables that set an option besides its own (Click) ones: the setting yields to them.
OTHER_SOURCES = {"websocket_compression": ("SERVER_WEBSOCKET_COMPRESSION",)}


def _listen(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, int]]:
    try:
        return [parse_listen(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _allowed_origins(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str] | None:
    if not values:
        return None  # the DDPCTL_ALLOWED_ORIGINS setting, else the site's own hosts
    from ..origins import parse_origin_list

    try:
        return parse_origin_list(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _websocket_compression(ctx: click.Context, param: click.Parameter, value: bool | None) -> bool:
    """The option (or DDPCTL_WEBSOCKET_COMPRESSION), else Meteor's SERVER_WEBSOCKET_COMPRESSION
    (JSON: a value JavaScript finds falsy, ``0``, ``false``, ``null`` or ``""``, turns
    compression off, as in Meteor's stream_server.js; any other is on, its deflate settings
    unused), else on."""
    if value is not None:
        return value
    meteor = os.environ.get("SERVER_WEBSOCKET_COMPRESSION")
    if meteor is None:
        return True
    try:
        value = json.loads(meteor)
    except ValueError:
        raise click.BadParameter(f"SERVER_WEBSOCKET_COMPRESSION={meteor!r} is not JSON") from None
    # JavaScript's falsy JSON values; any object (even {}) or array turns it on
    return not (value is None or value is False or value == ""
                or (type(value) in (int, float) and value == 0))


def _trusted_proxies(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    from ..server.forwarded import ProxyPolicy

    entries = [part.strip() for value in values for part in value.split(",") if part.strip()]
    try:
        ProxyPolicy.parse(0, entries)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return entries


def _removed_send_queue_size(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        # Before logging is configured: straight to stderr.
        click.echo("warning: --send-queue-size / DDPCTL_SEND_QUEUE_SIZE (a message count) is ignored: "
                   "the send buffer is limited in bytes (--send-buffer-limit, --send-timeout)", err=True)


@click.command()
@django_options
@click.option("--listen", "-l", multiple=True, default=["127.0.0.1:8000"], show_default=True,
              envvar="DDPCTL_LISTEN", metavar="HOST:PORT", callback=_listen,
              help="Address to listen on (repeatable; ':8000' means every interface).  "
                   "[env: DDPCTL_LISTEN, space-separated]")
@click.option("--ssl-certfile", envvar="DDPCTL_SSL_CERTFILE", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, readable=True, resolve_path=True),
              help="TLS certificate chain (PEM); serves https:// and wss://.  [env: DDPCTL_SSL_CERTFILE]")
@click.option("--ssl-keyfile", envvar="DDPCTL_SSL_KEYFILE", metavar="FILE",
              type=click.Path(exists=True, dir_okay=False, readable=True, resolve_path=True),
              help="TLS private key (PEM), if not inside the certificate file.  [env: DDPCTL_SSL_KEYFILE]")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, envvar="DDPCTL_WORKERS",
              metavar="N", help="Serving processes sharing the listening sockets (use the cores of a "
                                "host; each has its own change dispatcher).  [env: DDPCTL_WORKERS]")
@click.option("--reload/--no-reload", default=False, envvar="DDPCTL_RELOAD",
              help="Restart when a .py file under the current directory changes (development).  "
                   "[env: DDPCTL_RELOAD]")
@click.option("--log-level", type=click.Choice(LEVELS), default="info", show_default=True,
              envvar="DDPCTL_LOG_LEVEL", help="[env: DDPCTL_LOG_LEVEL]")
@click.option("--log-format", type=click.Choice(FORMATS, case_sensitive=False), default=None,
              envvar="DDPCTL_LOG_FORMAT",
              help="text: 'TIME LEVEL LOGGER: MESSAGE' lines; json: one object per line (time, level, "
                   "logger, message, exception) for log shippers.  Times are ISO 8601 with the UTC "
                   "offset of the zone the process started in (TZ=UTC for UTC), whatever Django's "
                   "TIME_ZONE.  Default: the DDPCTL_LOG_FORMAT Django setting, else text.  "
                   "[env: DDPCTL_LOG_FORMAT]")
@click.option("--max-frame-size", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              envvar="DDPCTL_MAX_FRAME_SIZE", metavar="BYTES",
              help="Largest DDP message accepted (a raw WebSocket message, or one message of a SockJS "
                   "frame once unescaped); a bigger one closes that connection with 1009 (message "
                   "too big).  [env: DDPCTL_MAX_FRAME_SIZE]")
@click.option("--websocket-compression/--no-websocket-compression", default=None,
              envvar="DDPCTL_WEBSOCKET_COMPRESSION", callback=_websocket_compression,
              help="permessage-deflate on WebSockets (raw and SockJS) for clients that offer it, "
                   "as Meteor does.  On by default; SERVER_WEBSOCKET_COMPRESSION=0 (Meteor's "
                   "variable) also turns it off.  [env: DDPCTL_WEBSOCKET_COMPRESSION]")
@click.option("--heartbeat-interval", type=Seconds(), default=15.0, show_default=True,
              envvar="DDPCTL_HEARTBEAT_INTERVAL", metavar="SECONDS",
              help="Ping a client idle this long (0 disables).  [env: DDPCTL_HEARTBEAT_INTERVAL]")
@click.option("--heartbeat-timeout", type=Seconds(min=0.1), default=15.0, show_default=True,
              envvar="DDPCTL_HEARTBEAT_TIMEOUT", metavar="SECONDS",
              help="Close a client that does not answer a ping this fast.  [env: DDPCTL_HEARTBEAT_TIMEOUT]")
@click.option("--db-connections", type=click.IntRange(min=1), default=None,
              envvar="DDPCTL_DB_CONNECTIONS", metavar="N",
              help="Most database connections user code (methods, publications, Django views) holds "
                   "at once in this process; change delivery, the registry heartbeat and operator "
                   f"commands have {SYSTEM_CONNECTIONS} more of their own, plus one LISTEN connection.  "
                   f"Default: the DDPCTL_DB_CONNECTIONS Django setting, else {DEFAULT_DB_CONNECTIONS}.  "
                   "[env: DDPCTL_DB_CONNECTIONS]")
@click.option("--receive-queue-size", type=click.IntRange(min=1), default=1_000, show_default=True,
              envvar="DDPCTL_RECEIVE_QUEUE_SIZE", metavar="MESSAGES",
              help="Messages of one client waiting to be processed before the server stops reading its "
                   "socket (TCP then pushes back).  [env: DDPCTL_RECEIVE_QUEUE_SIZE]")
@click.option("--receive-queue-bytes", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              envvar="DDPCTL_RECEIVE_QUEUE_BYTES", metavar="BYTES",
              help="Bytes of frames of one client waiting to be processed before the server stops reading "
                   "its socket.  [env: DDPCTL_RECEIVE_QUEUE_BYTES]")
@click.option("--max-subscriptions", type=click.IntRange(min=1), default=500, show_default=True,
              envvar="DDPCTL_MAX_SUBSCRIPTIONS", metavar="N",
              help="Active subscriptions per connection; one more gets nosub with error 429.  "
                   "[env: DDPCTL_MAX_SUBSCRIPTIONS]")
@click.option("--max-params-size", type=click.IntRange(min=64), default=64 << 10, show_default=True,
              envvar="DDPCTL_MAX_PARAMS_SIZE", metavar="BYTES",
              help="Largest subscription params (EJSON, UTF-8); bigger gets nosub with error 413.  "
                   "[env: DDPCTL_MAX_PARAMS_SIZE]")
@click.option("--send-buffer-limit", default="64M", show_default=True, type=ByteSize(min=64 << 10),
              envvar="DDPCTL_SEND_BUFFER_LIMIT", metavar="BYTES",
              help="Bytes buffered for one client (K, M, G suffixes) past which live changes "
                   "disconnect it (close 1008 'send buffer limit exceeded'); a new subscription's "
                   "documents, a login or a replay wait for the client instead.  Minimum 64K.  "
                   "[env: DDPCTL_SEND_BUFFER_LIMIT]")
@click.option("--send-timeout", type=Seconds(min=0.1), default=30.0, show_default=True,
              envvar="DDPCTL_SEND_TIMEOUT", metavar="SECONDS",
              help="Close a client that has data waiting and reads none of it this long "
                   "(close 1008 'send timeout').  [env: DDPCTL_SEND_TIMEOUT]")
@click.option("--send-queue-size", type=int, hidden=True, expose_value=False, envvar="DDPCTL_SEND_QUEUE_SIZE",
              callback=_removed_send_queue_size, help="Removed: ignored with a warning.")
@click.option("--sockjs-heartbeat", type=Seconds(), default=45.0, show_default=True,
              envvar="DDPCTL_SOCKJS_HEARTBEAT", metavar="SECONDS",
              help="Interval of SockJS 'h' frames (0 disables).  [env: DDPCTL_SOCKJS_HEARTBEAT]")
@click.option("--sockjs-disconnect-delay", type=Seconds(min=0.1), default=60.0, show_default=True,
              envvar="DDPCTL_SOCKJS_DISCONNECT", metavar="SECONDS",
              help="A SockJS session over HTTP (xhr, eventsource, ... fallbacks) whose client has no "
                   "request open this long ends, its subscriptions with it (Meteor: 60 s).  "
                   "[env: DDPCTL_SOCKJS_DISCONNECT]")
@click.option("--max-sockjs-sessions", type=click.IntRange(min=1), default=10_000, show_default=True,
              envvar="DDPCTL_MAX_SOCKJS_SESSIONS", metavar="N",
              help="Most SockJS sessions over HTTP (the xhr, eventsource, ... fallbacks) open at once "
                   "in this process; a new one beyond it gets 503 (WebSocket clients are bounded by "
                   "open files instead).  A session that never sends DDP's connect ends after 45 s.  "
                   "[env: DDPCTL_MAX_SOCKJS_SESSIONS]")
@click.option("--sockjs-jsessionid/--no-sockjs-jsessionid", default=False,
              envvar=["DDPCTL_SOCKJS_JSESSIONID", "USE_JSESSIONID"],
              help="Set a JSESSIONID cookie on SockJS responses, for load balancers that keep "
                   "sessions sticky by it (Meteor's USE_JSESSIONID).  [env: DDPCTL_SOCKJS_JSESSIONID "
                   "or USE_JSESSIONID]")
@click.option("--node-heartbeat", type=Seconds(min=0.1), default=5.0, show_default=True,
              envvar="DDPCTL_NODE_HEARTBEAT", metavar="SECONDS",
              help="How often this process updates its row and its connections in the node registry "
                   "(ddpctl nodes/conns/subs ls); after 3 missed beats it is listed no more.  "
                   "[env: DDPCTL_NODE_HEARTBEAT]")
@click.option("--meteor-bundle", envvar="DDPCTL_METEOR_BUNDLE", metavar="DIR",
              type=click.Path(resolve_path=True),
              help="Serve this `meteor build --directory` output (the bundle/ folder or its parent): "
                   "the app's HTML, its static files and hot code push.  Default: the "
                   "DDPCTL_METEOR_BUNDLE Django setting.  [env: DDPCTL_METEOR_BUNDLE]")
@click.option("--meteor-settings", envvar="DDPCTL_METEOR_SETTINGS", metavar="FILE",
              type=click.Path(resolve_path=True),
              help="Meteor settings JSON; its 'public' object reaches clients as Meteor.settings.public.  "
                   "[env: DDPCTL_METEOR_SETTINGS]")
@click.option("--root-url", envvar=["DDPCTL_ROOT_URL", "ROOT_URL"], metavar="URL",
              help="ROOT_URL for Meteor clients (default: from each request's Host).  [env: DDPCTL_ROOT_URL "
                   "or ROOT_URL]")
@click.option("--ddp-url", envvar=["DDPCTL_DDP_URL", "DDP_DEFAULT_CONNECTION_URL"], metavar="URL",
              help="DDP_DEFAULT_CONNECTION_URL for Meteor clients (default: ROOT_URL, i.e. this server).  "
                   "[env: DDPCTL_DDP_URL or DDP_DEFAULT_CONNECTION_URL]")
@click.option("--meteor-sri", type=click.Choice(["anonymous", "use-credentials", "none"]),
              default="anonymous", show_default=True, envvar="DDPCTL_METEOR_SRI",
              help="Subresource integrity attributes on the bundle's <script> and <link> tags, with this "
                   "crossorigin mode.  [env: DDPCTL_METEOR_SRI]")
@click.option("--meteor-source-maps/--no-meteor-source-maps", default=False,
              envvar="DDPCTL_METEOR_SOURCE_MAPS",
              help="Serve the bundle's source maps (off: they reveal your source).  "
                   "[env: DDPCTL_METEOR_SOURCE_MAPS]")
@click.option("--meteor-watch/--no-meteor-watch", default=True, envvar="DDPCTL_METEOR_WATCH",
              help="Reload the bundle when it changes on disk and push the new version to clients "
                   "(hot code push).  [env: DDPCTL_METEOR_WATCH]")
@click.option("--allowed-origin", "allowed_origins", multiple=True, envvar="DDPCTL_ALLOWED_ORIGINS",
              metavar="ORIGIN", callback=_allowed_origins,
              help="A web origin whose pages may open DDP connections (repeatable): "
                   "'https://app.example.com', 'https://*.example.com', 'null', or '*' for any.  "
                   "Replaces the default: the DDPCTL_ALLOWED_ORIGINS Django setting, else the site's own "
                   "hosts (ALLOWED_HOSTS, CSRF_TRUSTED_ORIGINS).  Same-origin pages and clients sending "
                   "no Origin are always allowed; others get 403.  [env: DDPCTL_ALLOWED_ORIGINS, "
                   "space-separated]")
@click.option("--header-timeout", type=Seconds(min=0.1), default=10.0, show_default=True,
              envvar="DDPCTL_HEADER_TIMEOUT", metavar="SECONDS",
              help="An HTTP request's head must arrive within this many seconds of the connection (or "
                   "of its first byte on a kept-alive connection); else 408 and the connection is "
                   "closed (slowloris).  Includes the TLS handshake.  [env: DDPCTL_HEADER_TIMEOUT]")
@click.option("--keepalive-timeout", type=Seconds(min=0.1), default=5.0, show_default=True,
              envvar="DDPCTL_KEEPALIVE_TIMEOUT", metavar="SECONDS",
              help="Close a kept-alive HTTP connection idle this long between requests.  "
                   "[env: DDPCTL_KEEPALIVE_TIMEOUT]")
@click.option("--body-timeout", type=Seconds(min=0.1), default=30.0, show_default=True,
              envvar="DDPCTL_BODY_TIMEOUT", metavar="SECONDS",
              help="An HTTP request body of which no byte comes for this long gets 408 and its "
                   "connection closed.  [env: DDPCTL_BODY_TIMEOUT]")
@click.option("--max-request-line", type=click.IntRange(min=256), default=8192, show_default=True,
              envvar="DDPCTL_MAX_REQUEST_LINE", metavar="BYTES",
              help="Longest HTTP request line (method, URL, version); longer gets 414.  "
                   "[env: DDPCTL_MAX_REQUEST_LINE]")
@click.option("--max-header-size", type=click.IntRange(min=1024), default=16384, show_default=True,
              envvar="DDPCTL_MAX_HEADER_SIZE", metavar="BYTES",
              help="Largest HTTP request head (request line and all headers); larger gets 431.  "
                   "[env: DDPCTL_MAX_HEADER_SIZE]")
@click.option("--max-headers", type=click.IntRange(min=8), default=100, show_default=True,
              envvar="DDPCTL_MAX_HEADERS", metavar="N",
              help="Most header fields in an HTTP request; more gets 431.  [env: DDPCTL_MAX_HEADERS]")
@click.option("--max-chunked-body", default="100M", show_default=True, type=ByteSize(min=64 << 10),
              envvar="DDPCTL_MAX_CHUNKED_BODY", metavar="BYTES",
              help="Largest chunked HTTP request body (K, M, G suffixes); it is read whole, to memory "
                   "and then a temporary file, before the view runs; larger gets 413.  Minimum 64K.  "
                   "[env: DDPCTL_MAX_CHUNKED_BODY]")
@click.option("--forwarded-count", type=click.IntRange(min=0), default=0, show_default=True,
              envvar=["DDPCTL_FORWARDED_COUNT", "HTTP_FORWARDED_COUNT"], metavar="N",
              help="Trust the N proxies nearest to the server to report the client's address and scheme "
                   "(X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Forwarded), like Meteor's "
                   "HTTP_FORWARDED_COUNT: 1 behind one reverse proxy.  0: the headers are ignored.  "
                   "[env: DDPCTL_FORWARDED_COUNT or HTTP_FORWARDED_COUNT]")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, envvar="DDPCTL_TRUSTED_PROXIES",
              metavar="ADDR|CIDR", callback=_trusted_proxies,
              help="A proxy address or network (repeatable: 10.0.0.0/8, 2001:db8::/32) trusted to report "
                   "the client, at any distance.  [env: DDPCTL_TRUSTED_PROXIES, comma-separated]")
@click.option("--forwarded-header", type=click.Choice(["x-forwarded", "forwarded"]), default="x-forwarded",
              show_default=True, envvar="DDPCTL_FORWARDED_HEADER",
              help="Which headers the trusted proxies write: X-Forwarded-For/-Proto/-Host (as Meteor reads) "
                   "or RFC 7239 Forwarded.  The other family is ignored.  [env: DDPCTL_FORWARDED_HEADER]")
@observability_options
@click.option("--legacy-server-id", is_flag=True, envvar="DDPCTL_LEGACY_SERVER_ID",
              help='Greet every socket with {"server_id":"0"} like Meteor <= 2.2 '
                   "(meteorhacks/ddptest needs it).  [env: DDPCTL_LEGACY_SERVER_ID]")
@click.pass_context
def serve(ctx: click.Context, **options: Any) -> None:
    """Serve the Django site and DDP (raw WebSocket at /websocket, SockJS at /sockjs).

    Stops gracefully on SIGTERM or Ctrl-C: no new connections, every DDP client gets
    close code 1001 after its queued messages, then the process exits 0.

    Each option shown with [env: DDPCTL_<NAME>] may also be set by the Django setting of that name
    (a Python value: DDPCTL_DB_CONNECTIONS = 20, DDPCTL_LISTEN = [":8000"]).  Precedence:
    the option > its environment variable > the Django setting > the default.

    \b
    Examples:
      ddpctl serve --settings mysite.settings
      ddpctl serve --settings mysite.settings -l 0.0.0.0:8000 -l [::]:8000
      DDPCTL_LISTEN=:443 ddpctl serve --ssl-certfile cert.pem --ssl-keyfile key.pem
      ddpctl serve --meteor-bundle ../myapp-build --root-url https://app.example.com/
    """
    configure_logging(options["log_level"], options["log_format"] or "text")
    if options["reload"]:
        _run_with_reloader()
        return
    setup_django(options["settings"], options["pythonpath"])
    from django.conf import settings as django_settings

    # Every setting of an option is checked, even one the option or environment overrides.
    problems = setting_problems(serve, django_settings, skip={"DDPCTL_ALLOWED_ORIGINS"})
    if problems:
        raise click.ClickException("\n".join(problems))
    applied = apply_settings(ctx, options, django_settings, other_sources=OTHER_SOURCES)
    if "DDPCTL_LOG_LEVEL" in applied or "DDPCTL_LOG_FORMAT" in applied:
        configure_logging(options["log_level"], options["log_format"] or "text")
    if applied:
        logger.debug("from the Django settings: %s", ", ".join(applied))
    meteor = {name: options.pop(name) for name in METEOR_OPTIONS}
    workers = options.pop("workers")
    for name in ("pythonpath", "reload", "log_format"):
        options.pop(name)
    if options["db_connections"] is None:
        options["db_connections"] = DEFAULT_DB_CONNECTIONS
    observability = {name: options.pop(name) for name in OBSERVABILITY_OPTIONS}
    config = ServeConfig(**options)
    metrics_address = apply_observability(config, observability)
    ssl_context = None
    if config.ssl_certfile:
        from ..server.runner import load_ssl_context
        try:
            ssl_context = load_ssl_context(config.ssl_certfile, config.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise click.ClickException(f"cannot load the TLS certificate/key: {exc}") from None
    elif config.ssl_keyfile:
        raise click.UsageError("--ssl-keyfile needs --ssl-certfile")
    _configure_rate_limits()
    _check_origins(config)
    _warn_missing_tables()
    _configure_meteor(config, **meteor)
    from ..server.runner import DDPServer, bind_sockets

    try:
        sockets = bind_sockets(config.listen, reuse_port=workers > 1)
    except OSError as exc:
        raise click.ClickException(str(exc.strerror or exc)) from None
    metrics_sockets = metrics_listener(metrics_address, reuse_port=workers > 1)
    if workers > 1:
        from ..server.supervisor import run_workers

        logger.warning("--workers %d: SockJS's HTTP fallbacks (xhr, eventsource, ...) keep a session in "
                       "one process, but the kernel hands each TCP connection to any worker: clients "
                       "that cannot use WebSockets will fail to stay connected (README: 'SockJS "
                       "fallbacks and load balancers')", workers)
        _banner(config, [s.getsockname()[:2] for s in sockets], workers)
        addresses = [s.getsockname()[:2] for s in sockets]  # with the real port if 0 was asked
        metrics_addresses = [s.getsockname()[:2] for s in metrics_sockets]
        with multiprocess_metrics(config) as on_exit:
            code = run_workers(workers, lambda: DDPServer(
                config, bind_sockets(addresses, reuse_port=True), ssl_context,
                bind_sockets(metrics_addresses, reuse_port=True)).serve(), on_exit=on_exit)
        sys.exit(code)
    server = DDPServer(config, sockets, ssl_context, metrics_sockets)
    _banner(config, server.addresses, 1)
    server.serve()


def _warn_missing_tables() -> None:
    """System check ``ddpctl.E007`` at start, as warnings: a published model whose table does
    not exist makes every subscription reading it fail (``manage.py migrate`` refuses to start
    with it, ``serve`` starts: the other publications still work)."""
    from django.db import DatabaseError, connections

    from ..livedata.capture import missing_tables

    try:
        absent = missing_tables()
    except DatabaseError as exc:  # the dispatcher reports an unreachable database on its own
        logger.warning("could not check the published tables: %s", str(exc).strip())
        return
    finally:
        connections.close_all()  # not kept open beside the lanes' connections (the budget)
    for problem in absent.problems if absent is not None else ():
        logger.warning("%s (ddpctl.E007): subscriptions reading it fail until it exists", problem)


def _configure_rate_limits() -> None:
    """Read the rate limit settings now, so that a malformed one stops the server at start."""
    from ..ratelimit import rate_limit

    try:
        rate_limit.configure()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _check_origins(config: ServeConfig) -> None:
    """Fail now, with one line, on an invalid DDPCTL_ALLOWED_ORIGINS setting."""
    if config.allowed_origins is not None:
        return
    from ..origins import allowed_origins_setting

    try:
        allowed_origins_setting()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _configure_meteor(config: ServeConfig, meteor_bundle: str | None, meteor_settings: str | None,
                      root_url: str | None, ddp_url: str | None, meteor_sri: str, meteor_source_maps: bool,
                      meteor_watch: bool) -> None:
    """Load the Meteor bundle once, before serving (the options, with their Django settings
    already applied)."""
    if not meteor_bundle:
        return
    from ..meteor.app import MeteorOptions
    from ..meteor.bundle import BundleError, load_bundle
    from ..meteor.settings_file import public_settings

    autoupdate_version = os.environ.get("AUTOUPDATE_VERSION") or None
    try:
        config.meteor_bundle = load_bundle(meteor_bundle, public_settings(meteor_settings),
                                           autoupdate_version)
    except BundleError as exc:
        raise click.ClickException(f"cannot serve the Meteor bundle: {exc}") from None
    config.meteor_options = MeteorOptions(
        root_url=root_url, ddp_url=ddp_url, sri_mode=None if meteor_sri == "none" else meteor_sri,
        source_maps=meteor_source_maps)
    config.meteor_watch = meteor_watch
    config.autoupdate_version = autoupdate_version


def _banner(config: ServeConfig, addresses: list[tuple[str, int]], workers: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..livedata.publish import publications
    from ..methods import methods

    console = Console(stderr=True, highlight=False)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan")
    table.add_column()
    ws = "wss" if config.ssl_certfile else "ws"
    for host, port in addresses:
        shown = f"[{host}]" if ":" in host else host
        table.add_row("DDP", f"{ws}://{shown}:{port}/websocket  ·  SockJS {config.scheme}://{shown}:{port}/sockjs")
        table.add_row("Django", f"{config.scheme}://{shown}:{port}/")
    table.add_row("settings", str(config.settings))
    observability_rows(table, config, addresses)
    bundle = config.meteor_bundle
    if bundle is not None:
        table.add_row("Meteor", f"{bundle.directory} ({', '.join(bundle.programs)}; {bundle.meteor_release})"
                                + ("; hot code push on" if config.meteor_watch else ""))
    table.add_row("serving", f"{len(methods.names())} method(s), {len(publications.names())} "
                             f"publication(s), at most {config.db_connections + SYSTEM_CONNECTIONS + 1} "
                             f"DB connections ({config.db_connections} for user code)"
                             + (f" per worker, {workers} workers" if workers > 1 else ""))
    title = f"ddpctl {__version__} (pid {os.getpid()}) - Ctrl-C or SIGTERM to stop"
    if log_format_in_use() == "json":  # stderr stays one JSON object per line
        logger.info("%s", title)
        for name, value in zip(table.columns[0].cells, table.columns[1].cells, strict=True):
            logger.info("%s: %s", name, value)
        return
    console.print(f"[bold]{title}[/bold]")
    console.print(table)


def _run_with_reloader() -> None:
    import watchfiles

    args = [a for a in sys.argv[1:] if a != "--reload"]
    command = shlex.join([sys.executable, "-m", "ddpctl", *args, "--no-reload"])
    logger.info("watching %s for changes (reload)", os.getcwd())
    watchfiles.run_process(os.getcwd(), target=command, target_type="command",
                           watch_filter=watchfiles.PythonFilter())
