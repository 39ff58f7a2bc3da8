"""The options of `tokgen serve` and `tokgen worker` are Settings fields, and every
--backend offers the engine backends."""

from typing import get_args

from tokgen.cli import build_parser
from tokgen.cli.serve import SERVE_OPTIONS, WORKER_OPTIONS, env_vars, flag_of, settings_with_flags
from tokgen.engine.factory import Backend
from tokgen.settings import Settings


def subcommand(parser, *words: str):
    for word in words:
        parser = parser._subparsers._group_actions[0].choices[word]
    return parser


def test_serve_and_worker_flags_come_from_settings(monkeypatch):
    """Each flag of `serve` and `worker` is a Settings field: --help shows its environment
    variable and default, and a flag given beats the environment, which beats the default."""
    parser = build_parser()
    helps = {}
    for command, options in (("serve", SERVE_OPTIONS), ("worker", WORKER_OPTIONS)):
        helps[command] = " ".join(subcommand(parser, command).format_help().split())
        for name in options:
            assert f"{flag_of(name)} " in helps[command], name
            assert f"[env {' or '.join(env_vars(name))}" in helps[command], name
    assert "continuations generating at once (default 8) [env TOKGEN_MAX_ACTIVE]" in helps["serve"]
    assert "[env TOKGEN_REDIS_URL or REDIS_URL]" in helps["worker"]
    assert "--backend {auto,vllm,hf}" in helps["worker"] and "[env TOKGEN_ENGINE_BACKEND]" in helps["worker"]
    assert "--no-worker serve the API only: no jobs rendered here [env TOKGEN_WORKER=false]" in helps["serve"]

    monkeypatch.setenv("TOKGEN_MAX_ACTIVE", "3")
    monkeypatch.setenv("TOKGEN_WORKER", "false")
    config = settings_with_flags(parser.parse_args(["serve", "--max-queued", "5", "--backend", "hf"]))
    assert (config.max_active, config.max_queued, config.engine_backend) == (3, 5, "hf")
    assert config.port == Settings.model_fields["port"].default and config.worker is False
    config = settings_with_flags(parser.parse_args(["serve", "--max-active", "2", "--insecure"]))
    assert config.max_active == 2 and config.insecure is True
    monkeypatch.delenv("TOKGEN_WORKER")
    assert settings_with_flags(parser.parse_args(["worker"])).worker is True
    assert settings_with_flags(parser.parse_args(["serve", "--no-worker"])).worker is False


def test_backend_choices_are_the_engine_backends():
    parser = build_parser()
    for words in (["generate"], ["serve"], ["worker"], ["eval", "continuation"], ["bench", "queue"]):
        (backend,) = [a for a in subcommand(parser, *words)._actions if "--backend" in a.option_strings]
        assert tuple(backend.choices) == get_args(Backend), words
