"""``tokenrelay serve`` and ``tokenrelay chat``."""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from tokenrelay import terminal
    from tokenrelay.client import ApprovalRequest, Client, RunStream

__all__ = ["main"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field, so flags, environment variables and docs can never drift apart."""
    from tokenrelay.server.settings import Settings

    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        args = typing.get_args(annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        env = f"TOKENRELAY_{name.upper()}"
        help_text = f"{info.description} (env {env})"
        if annotation is bool:  # --otel alone turns it on; --otel false, off
            kwargs.update(nargs="?", const="true", metavar="true|false")
        elif typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(args)
        elif typing.get_origin(annotation) is list:
            kwargs["action"] = "append"
        elif typing.get_origin(annotation) is dict:
            kwargs["type"] = _json_object
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
            help_text += " [optional]"
        parser.add_argument(_flag(name), help=help_text, **kwargs)


def _json_object(text: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. {"token": "alice"}')
    return value


def _die(message: str, code: int = 2) -> typing.NoReturn:
    print(f"tokenrelay: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _settings(overrides: dict[str, Any]) -> Any:
    from tokenrelay.server.settings import Settings

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        where = _flag(name) if name in overrides else f"TOKENRELAY_{name.upper()}"
        _die(f"{where}: {first['msg']}")


def serve(overrides: dict[str, Any]) -> None:
    """``tokenrelay serve``: check what can be checked before binding the port, then run the server."""
    from tokenrelay.server.serve import serve as run_server

    settings = _settings(overrides)
    if settings.log_format == "json":
        from tokenrelay.observability import configure_json_logs

        configure_json_logs(settings.log_level)  # before anything logs: every line is JSON
    if settings.workers > 1:
        _serve_workers(settings)  # each worker builds its own backend and app, after the fork
        return
    app = _build_app(settings)
    banner = f"{settings.backend} backend on http://{settings.host}:{settings.port}"
    if settings.log_format == "json":
        import logging

        logging.getLogger("tokenrelay.server").info(banner)
    else:
        print(f"tokenrelay: {banner}", file=sys.stderr)
    run_server(app, app.state.relay, settings)  # until SIGTERM or Ctrl-C, then a graceful shutdown


def _build_app(settings: Any) -> Any:
    """The backend (built and loaded) and the app, or a one-line error and exit status 1."""
    from tokenrelay.errors import BackendError, ConfigError
    from tokenrelay.server.app import create_app
    from tokenrelay.server.factory import build_backend

    try:
        backend = build_backend(settings)
        backend.load()  # fail here, with one line, rather than in the server's startup with a traceback
    except BackendError as exc:
        _die(exc.message, 1)
    except (ConfigError, ValueError) as exc:  # a setting that cannot work, an unknown backend
        _die(str(exc), 1)
    if settings.store == "redis":
        _check_redis(settings.redis_url, cluster=settings.redis_cluster)
    try:
        app = create_app(settings, backend)
    except (ImportError, ValueError) as exc:
        _die(str(exc), 1)  # a missing extra (--store redis without redis), a bad tokens file
    _tune_gc()
    return app


def _serve_workers(settings: Any) -> None:
    """``serve --workers N``: refused (status 2) without a shared store and history; each worker builds its app."""
    from tokenrelay.errors import ConfigError
    from tokenrelay.server.workers import refusal, serve_workers

    reason = refusal(settings)
    if reason is not None:
        _die(reason, 2)
    # before any worker starts (each checks again, with its backend)
    _check_redis(settings.redis_url, cluster=settings.redis_cluster)
    try:
        status = serve_workers(settings, lambda: _build_app(settings))
    except ConfigError as exc:  # the address: in use, or not this machine's
        _die(str(exc), 1)
    if status:
        raise SystemExit(status)


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the streaming path.

    Thousands of open streams are hundreds of thousands of long-lived objects (tasks, frames, protocol state), and
    with CPython's default thresholds the collector rescans them over and over: measured with 2,000 streams, it
    took a third of the server's CPU. Everything loaded so far (modules, the app, the model) is frozen out of the
    collector's sight, and collections run 30x less often. Reference counting still frees almost everything at once;
    this only delays the collection of reference cycles.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def _check_redis(url: str, *, cluster: bool = False) -> None:
    """Fail at start, with one line, when the Redis of --store redis cannot be reached (with --redis-cluster: when
    it is not a node of a cluster that serves every slot)."""
    from tokenrelay._extras import missing_extra

    try:
        import redis
    except ImportError as exc:
        _die(str(missing_extra("--store redis", "redis", "redis", cause=exc)), 1)
    if cluster:
        _check_redis_cluster(url)
        return
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        _die(f"--redis-url: cannot reach Redis: {exc}", 1)  # not the URL itself: it may hold a password
    finally:
        client.close()


def _check_redis_cluster(url: str) -> None:
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException, RedisError

    try:
        client = RedisCluster.from_url(url, socket_connect_timeout=5, socket_timeout=5)  # reads the cluster's slots
    except (RedisError, RedisClusterException) as exc:
        _die(f"--redis-url with --redis-cluster: not a reachable Redis Cluster: {exc}", 1)
    client.close()


def chat(
    url: str, message: str | None, user_id: str | None, conversation_id: str | None, token: str | None = None
) -> int:
    """``tokenrelay chat``: one message (``message``) or an interactive session; the exit status.

    0 when every answer ended normally (or was cut at the length limit, which is said), 1 when a run failed (an
    error, a stream that could not be completed, a refused message, a server out of reach), 130 when Ctrl-C
    stopped the one message's answer.
    """
    from tokenrelay.client import Client

    with Client(url, token=token) as client:
        try:
            if message is not None:
                return _ask(client, message, user_id, conversation_id)[0]
            return _converse(client, user_id, conversation_id)
        except KeyboardInterrupt:  # a second Ctrl-C, while the first one's cancel was being sent
            sys.stdout.write("\n")
            return 130


def _converse(client: Client, user_id: str | None, conversation_id: str | None) -> int:
    """One message per line, all in one conversation, until EOF (or Ctrl-C at the prompt); 1 if any run failed."""
    status = 0
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            sys.stdout.write("\n")
            return status
        if text.strip():
            turn, conversation_id = _ask(client, text, user_id, conversation_id)
            status = max(status, 1 if turn == 1 else 0)  # a stopped answer is not a failure


def _ask(client: Client, text: str, user_id: str | None, conversation_id: str | None) -> tuple[int, str | None]:
    """Show one answer as it streams; its status, and the conversation id to send the next message in."""
    import httpx

    from tokenrelay import terminal
    from tokenrelay.client import ApprovalRequest, Paused, TokenrelayError

    view = terminal.TurnView(sys.stdout, sys.stderr, color=terminal.wants_color(sys.stdout))
    stream = client.stream_chat(text, user_id=user_id, conversation_id=conversation_id)
    asked: list[ApprovalRequest] = []
    try:
        for event in stream:
            view.show(event)
            if isinstance(event, ApprovalRequest):
                asked.append(event)
            elif isinstance(event, Paused) and stream.run_id is not None:
                _answer(client, stream.run_id, asked, user_id)  # the stream goes on once they are answered
                asked = []
    except KeyboardInterrupt:
        # Ctrl-C is the Stop: an explicit cancel (closing the connection would only detach the run, which the
        # server keeps for a resume), and the program goes on to the next message.
        view.end()
        _stop(stream, view)
        return terminal.STOPPED, stream.conversation_id or conversation_id
    except TokenrelayError as exc:
        view.failed(str(exc))
    except (OSError, httpx.HTTPError) as exc:
        view.failed(f"cannot reach {client.base_url}: {exc}")
    view.end()
    return view.status, view.conversation_id or stream.conversation_id or conversation_id


def _answer(client: Client, run_id: str, asked: Sequence[ApprovalRequest], user_id: str | None) -> None:
    """Ask the person about each tool call the run waits for, and send the answers (no answer is a denial)."""
    for request in asked:
        try:
            reply = input(f"approve {request.name}({request.arguments})? [y/N] ")
        except EOFError:
            reply = ""
        yes = reply.strip().lower() in {"y", "yes"}
        client.approve(run_id, request.call_id, yes, reason=None if yes else "denied in the terminal", user_id=user_id)


def approve(args: dict[str, Any]) -> int:
    """``tokenrelay approve RUN_ID CALL_ID [--deny] [--reason R]``: answer a tool call a run waits for; the exit
    status (1 when the server refused: no such call waiting, or answered otherwise)."""
    from tokenrelay.client import Client, TokenrelayError

    with Client(args["url"], token=args["token"]) as client:
        try:
            status = client.approve(
                args["run_id"], args["call_id"], not args["deny"], reason=args["reason"], user_id=args["user_id"]
            )
        except TokenrelayError as exc:
            print(f"tokenrelay: {exc}", file=sys.stderr)
            return 1
    print(f"{'denied' if args['deny'] else 'approved'} ({status})")
    return 0


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("TOKENRELAY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--user-id", default=None)
    parser.add_argument(
        "--token", default=os.environ.get("TOKENRELAY_TOKEN"), help="bearer token (env TOKENRELAY_TOKEN)"
    )


def _stop(stream: RunStream, view: terminal.TurnView) -> None:
    from tokenrelay.client import TokenrelayError

    try:
        stream.cancel()
    except TokenrelayError as exc:
        view.note("[stopped here; the server did not take the cancel]")
        view.failed(f"cannot cancel run {stream.run_id}: {exc}")
        return
    view.note("[stopped]")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``tokenrelay`` command; the exit status."""
    parser = argparse.ArgumentParser(prog="tokenrelay", description="Stream AI responses in real time.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve", help="run the server")
    _add_settings_flags(serve_parser)
    chat_parser = sub.add_parser("chat", help="chat with a running server in the terminal")
    chat_parser.add_argument("message", nargs="?", help="send one message and exit (default: interactive)")
    chat_parser.add_argument("--url", default=os.environ.get("TOKENRELAY_URL", "http://127.0.0.1:8000"))
    chat_parser.add_argument("--user-id", default=None)
    chat_parser.add_argument("--conversation-id", default=None)
    chat_parser.add_argument(
        "--token", default=os.environ.get("TOKENRELAY_TOKEN"), help="bearer token (env TOKENRELAY_TOKEN)"
    )
    approve_parser = sub.add_parser("approve", help="approve (or --deny) a tool call a run waits for")
    approve_parser.add_argument("run_id")
    approve_parser.add_argument("call_id")
    approve_parser.add_argument("--deny", action="store_true", help="deny the call: the model is told so")
    approve_parser.add_argument("--reason", default=None, help="why, given to the model with a denial")
    _client_flags(approve_parser)
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    if command == "serve":
        serve(args)
        return 0
    if command == "approve":
        return approve(args)
    return chat(args["url"], args["message"], args["user_id"], args["conversation_id"], args["token"])


if __name__ == "__main__":
    raise SystemExit(main())
