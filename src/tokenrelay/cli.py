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
    from tokenrelay.client import Client, RunStream

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
        if typing.get_origin(annotation) is typing.Literal:
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
    from tokenrelay.errors import BackendError, ConfigError
    from tokenrelay.server.app import create_app
    from tokenrelay.server.factory import build_backend
    from tokenrelay.server.serve import serve as run_server

    settings = _settings(overrides)
    try:
        backend = build_backend(settings)
        backend.load()  # fail here, with one line, rather than in the server's startup with a traceback
    except BackendError as exc:
        _die(exc.message, 1)
    except (ConfigError, ValueError) as exc:  # a setting that cannot work, an unknown backend
        _die(str(exc), 1)
    if settings.store == "redis":
        _check_redis(settings.redis_url)
    try:
        app = create_app(settings, backend)
    except (ImportError, ValueError) as exc:
        _die(str(exc), 1)  # a missing extra (--store redis without redis), a bad tokens file
    _tune_gc()
    print(f"tokenrelay: {settings.backend} backend on http://{settings.host}:{settings.port}", file=sys.stderr)
    run_server(app, app.state.relay, settings)  # until SIGTERM or Ctrl-C, then a graceful shutdown


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


def _check_redis(url: str) -> None:
    """Fail at start, with one line, when the Redis of --store redis cannot be reached."""
    try:
        import redis
    except ImportError:
        _die("--store redis needs the 'redis' extra: pip install 'tokenrelay[redis]'", 1)
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        _die(f"--redis-url: cannot reach Redis: {exc}", 1)  # not the URL itself: it may hold a password
    finally:
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
    from tokenrelay.client import TokenrelayError

    view = terminal.TurnView(sys.stdout, sys.stderr, color=terminal.wants_color(sys.stdout))
    stream = client.stream_chat(text, user_id=user_id, conversation_id=conversation_id)
    try:
        for event in stream:
            view.show(event)
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
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    if command == "serve":
        serve(args)
        return 0
    return chat(args["url"], args["message"], args["user_id"], args["conversation_id"], args["token"])


if __name__ == "__main__":
    raise SystemExit(main())
