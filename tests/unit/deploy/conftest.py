"""The deploy/ files' tests reuse the server tests' tiny served models and app factory."""

from tests.unit.serve.conftest import chat_decoder, client_for, served_decoder  # noqa: F401
